/**
 * The WhatsApp message id (wamid) and the SMS id of a message are unique, but most rows hold
 * neither for most of their life, and a message holds only one of the two. Their unique
 * constraints indexed every row anyway: the NULLs too, again at each status change (queued,
 * sending, sent: status is in other indexes' predicates, so those updates are never HOT). Partial
 * unique indexes hold only the ids that exist, with the same uniqueness (NULLs never clashed).
 * Status reports find a message by `provider_message_id = $1` or `sms_message_id = $1`, which
 * implies the predicate, so they use these indexes as before. Frozen in time: never import app
 * code here.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create unique index outbound_messages_wamid_key on outbound_messages (provider_message_id) where provider_message_id is not null`.execute(db);
  await sql`alter table outbound_messages drop constraint outbound_messages_provider_message_id_key`.execute(db);
  await sql`create unique index outbound_messages_sms_id_key on outbound_messages (sms_message_id) where sms_message_id is not null`.execute(db);
  await sql`alter table outbound_messages drop constraint outbound_messages_sms_message_id_key`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table outbound_messages add constraint outbound_messages_provider_message_id_key unique (provider_message_id)`.execute(db);
  await sql`drop index outbound_messages_wamid_key`.execute(db);
  await sql`alter table outbound_messages add constraint outbound_messages_sms_message_id_key unique (sms_message_id)`.execute(db);
  await sql`drop index outbound_messages_sms_id_key`.execute(db);
}
