/**
 * Whether an invoice reached its customer (README: what each status means). An invoice is
 * `sent` once it is handed to the delivery pipeline. When its own message (kind `invoice`)
 * then reaches the customer on no channel, WhatsApp and SMS both failed for good, the invoice
 * is `failed`: the stats count it there, and it stays unpaid (payable, overdue, remindable).
 * A later invoice or reminder message for it that does go out makes it `sent` again. Both
 * changes go in the transaction that records the message's own outcome, and the stats
 * rollups' triggers follow them like any status change.
 */
import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { Database } from '../db/schema.js';

/** Marks the invoices of these messages failed, where the message is the invoice's own and the invoice is still `sent`. */
export async function markInvoicesUnreached(db: Kysely<Database>, messageIds: readonly string[]): Promise<void> {
  if (messageIds.length === 0) return;
  await sql`
    with unreached as (
      update invoices i set status = 'failed', updated_at = now()
      from outbound_messages o
      where o.id = any(${[...messageIds]}::uuid[]) and o.kind = 'invoice' and o.status = 'failed'
        and i.id = o.invoice_id and i.status = 'sent'
      returning i.id, o.id as message_id
    )
    insert into invoice_events (invoice_id, actor, type, data)
    select id, 'system', 'unreached', jsonb_build_object('message_id', message_id) from unreached`.execute(db);
}

/**
 * The statement that makes failed invoices `sent` again when a message for them (the invoice
 * itself, or a reminder) has gone out: `sentIds` is a relation of the message ids just recorded
 * as sent, run as a data-modifying WITH of that recording.
 */
export function invoicesReachedStatement(sentIds: RawBuilder<unknown>): RawBuilder<unknown> {
  return sql`
    update invoices i set status = 'sent', updated_at = now()
    from outbound_messages o
    where o.id in (${sentIds}) and o.kind in ('invoice', 'reminder') and i.id = o.invoice_id and i.status = 'failed'`;
}
