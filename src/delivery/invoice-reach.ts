/**
 * Whether an invoice reached its customer (README: what each status means). An invoice is
 * `sent` once it is handed to the delivery pipeline. When its own message (kind `invoice`)
 * then reaches the customer on no channel, WhatsApp and SMS both failed for good, the invoice
 * is `failed`: the stats count it there, and it stays unpaid (payable, overdue, remindable).
 * A later invoice or reminder message for it that does go out makes it `sent` again. Both
 * changes go in the transaction that records the message's own outcome, and the stats
 * rollups' triggers follow them like any status change.
 *
 * An invoice going unreached is the merchant's to fix (a wrong number, most often), so the
 * merchant is told, in the same transaction: a `notice`, which never makes an invoice
 * unreached itself (only kind `invoice` does), so a notice that fails cannot start a loop.
 */
import { sql, type RawBuilder, type Transaction } from 'kysely';
import type { Database, Language } from '../db/schema.js';
import { texts } from '../domain/texts.js';
import type { Outbox } from './outbox.js';

/**
 * Marks the invoices of these messages failed, where the message is the invoice's own, the
 * invoice is still `sent` and none of its other invoice or reminder messages has gone out, and
 * (unless `notify` is false) writes each one's notice to its merchant. Returns the notices'
 * ids, for the caller to dispatch after commit.
 *
 * Once per going unreached: only the statement that turns the invoice from `sent` to `failed`
 * (the row lock makes a concurrent one wait and then find it `failed`) returns it, so the same
 * failure reported again (a second `Failed` delivery report) tells nobody anything. An
 * invoice made `sent` again by a later message that goes out can go unreached, and be told, again.
 */
export async function markInvoicesUnreached(
  trx: Transaction<Database>,
  messageIds: readonly string[],
  outbox: Pick<Outbox, 'enqueue'>,
  options: { notify: boolean } = { notify: true },
): Promise<string[]> {
  if (messageIds.length === 0) return [];
  const { rows } = await sql<{ id: string; number: number; customer_phone: string; merchant_phone: string; merchant_language: Language }>`
    with unreached as (
      update invoices i set status = 'failed', updated_at = now()
      from outbound_messages o
      where o.id = any(${[...messageIds]}::uuid[]) and o.kind = 'invoice' and o.status = 'failed'
        and i.id = o.invoice_id and i.status = 'sent'
        -- Reached by another of its messages (a reminder gone out, the invoice sent again): a
        -- late failure report about this one does not undo that.
        and not exists (
          select 1 from outbound_messages r
          where r.invoice_id = i.id and r.id <> o.id and r.kind in ('invoice', 'reminder') and r.status in ('sent', 'delivered', 'read'))
      returning i.id, i.number, i.customer_phone, i.merchant_id, o.id as message_id
    ), recorded as (
      insert into invoice_events (invoice_id, actor, type, data)
      select id, 'system', 'unreached', jsonb_build_object('message_id', message_id) from unreached
    )
    select u.id, u.number, u.customer_phone, m.phone as merchant_phone, m.language as merchant_language
    from unreached u join merchants m on m.id = u.merchant_id
    order by u.id`.execute(trx);
  // Nothing went unreached (the usual case: the failed message was no invoice's own): no second statement.
  if (rows.length === 0 || !options.notify) return [];
  return outbox.enqueue(
    trx,
    rows.map((row) => ({
      recipient: row.merchant_phone,
      kind: 'notice' as const,
      invoiceId: row.id,
      // Often by SMS (a failure reported hours later, the merchant's window closed): a plain one.
      payload: {
        message: texts[row.merchant_language].invoiceUnreached(row.number, row.customer_phone),
        sms: texts[row.merchant_language].invoiceUnreachedSms(row.number, row.customer_phone),
      },
    })),
  );
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
