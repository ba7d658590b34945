/**
 * The outbox sweep looks for messages still queued or sending long after they were written;
 * a partial index keeps that a small read however many messages were ever sent. Frozen in
 * time: never import app code here.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index outbound_messages_pending_idx on outbound_messages (updated_at) where status in ('queued', 'sending')`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index outbound_messages_pending_idx`.execute(db);
}
