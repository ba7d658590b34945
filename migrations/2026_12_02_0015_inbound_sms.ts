/**
 * Text messages customers send to the SMS number (Africa's Talking incoming messages): the
 * invoice and the payment notices sent by SMS say "reply PAY", and the reply now reaches the
 * conversation. Stored as inbound events like WhatsApp messages (each message id applied once).
 * Frozen in time: never import app code here.
 */
import { sql, type Kysely } from 'kysely';

const BEFORE = ['whatsapp_message', 'whatsapp_status', 'whatsapp_payload', 'mpesa_callback', 'sms_report'];

async function allowSources(db: Kysely<unknown>, sources: readonly string[]): Promise<void> {
  await sql`alter table inbound_events drop constraint inbound_events_source_check`.execute(db);
  await sql`alter table inbound_events add constraint inbound_events_source_check check (source in (${sql.join(sources.map((s) => sql.lit(s)))}))`.execute(db);
}

export async function up(db: Kysely<unknown>): Promise<void> {
  await allowSources(db, [...BEFORE, 'sms_message']);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`delete from inbound_events where source = 'sms_message'`.execute(db);
  await allowSources(db, BEFORE);
}
