/**
 * outbound_messages_status_idx (status, created_at) is read by no query: the unsent messages
 * are found through the partial indexes of 0006 and 0009, single messages by id, wamid or SMS
 * id. Yet every message wrote it three times (queued, sending, sent). It gives way to an index
 * of the failed messages only, which is what an operator looks for by status. Frozen in time:
 * never import app code here.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index outbound_messages_failed_idx on outbound_messages (created_at) where status = 'failed'`.execute(db);
  await sql`drop index outbound_messages_status_idx`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`create index outbound_messages_status_idx on outbound_messages (status, created_at)`.execute(db);
  await sql`drop index outbound_messages_failed_idx`.execute(db);
}
