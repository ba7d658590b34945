/**
 * Text messages customers send to the SMS number (Africa's Talking incoming messages): the
 * invoice and the payment notices sent by SMS say "reply PAY", and the reply now reaches the
 * conversation. Stored as inbound events like WhatsApp messages (each message id applied once).
 * Frozen in time: never import app code here.
 */
import { sql, type Kysely } from 'kysely';

const BEFORE = ['whatsapp_message', 'whatsapp_status', 'whatsapp_payload', 'mpesa_callback', 'sms_report'];

/**
 * The check on `source`, replaced. `validate` false: the rows are not re-checked (a scan of
 * every inbound event, with writes to the table blocked until the deploy's migrations commit);
 * new rows are checked all the same.
 */
async function allowSources(db: Kysely<unknown>, sources: readonly string[], validate: boolean): Promise<void> {
  await sql`alter table inbound_events drop constraint inbound_events_source_check`.execute(db);
  await sql`alter table inbound_events add constraint inbound_events_source_check check (source in (${sql.join(sources.map((s) => sql.lit(s)))}))${validate ? sql`` : sql` not valid`}`.execute(db);
}

export async function up(db: Kysely<unknown>): Promise<void> {
  // Every row already passes: the old check allowed fewer sources.
  await allowSources(db, [...BEFORE, 'sms_message'], false);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`delete from inbound_events where source = 'sms_message'`.execute(db);
  await allowSources(db, BEFORE, true);
}
