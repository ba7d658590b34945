/**
 * Fewer index entries for each payment and each message, for indexes nothing needs whole.
 * A paid transition changes the invoice's status, so it writes a new entry in every index on
 * invoices whose condition the paid row meets; a message is written, claimed and recorded sent,
 * each time a new entry in every index on outbound_messages whose condition the row meets.
 *
 * - invoices (merchant_id, status): every merchant read goes by (merchant_id, number) (`list`,
 *   an invoice by its number) or (merchant_id, created_at) with the status included (the
 *   duplicate check, the one-merchant summary, `summary`). Dropped.
 * - invoices (customer_phone): every customer read asks for unpaid invoices (pending, sent,
 *   failed): the customer's list, PAY, whether a phone is a customer. Now only those rows:
 *   paid and cancelled invoices leave it, and a payment writes no entry there.
 * - outbound_messages (updated_at) where unsent: read only by the sweep of messages stuck for
 *   30 minutes (every 5 minutes), which reads the unsent rows through
 *   (recipient, created_at) where unsent instead, as few as they are. Dropped.
 *
 * A plain (not concurrent) index build: the migration runs in a transaction. The unpaid index
 * may have been built by hand beforehand (create index concurrently, on a large table): then it
 * is kept as it is. Frozen in time:
 * never import app code here.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`drop index if exists invoices_merchant_status_idx`.execute(db);
  await sql`create index if not exists invoices_customer_unpaid_idx on invoices (customer_phone) where status in ('pending', 'sent', 'failed')`.execute(db);
  await sql`drop index if exists invoices_customer_phone_idx`.execute(db);
  await sql`drop index if exists outbound_messages_pending_idx`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`create index outbound_messages_pending_idx on outbound_messages (updated_at) where status in ('queued', 'sending')`.execute(db);
  await sql`create index invoices_customer_phone_idx on invoices (customer_phone)`.execute(db);
  await sql`drop index if exists invoices_customer_unpaid_idx`.execute(db);
  await sql`create index invoices_merchant_status_idx on invoices (merchant_id, status)`.execute(db);
}
