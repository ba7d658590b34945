/**
 * A message is claimed only when no older one to the same person is still unsent: this index
 * keeps that check a small read (unsent messages of one recipient, by write time). Frozen in
 * time: never import app code here.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index outbound_messages_recipient_unsent_idx on outbound_messages (recipient, created_at) where status in ('queued', 'sending')`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index outbound_messages_recipient_unsent_idx`.execute(db);
}
