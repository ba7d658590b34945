/**
 * When a message may be tried again: a retry (with its backoff or Meta's Retry-After) sets it,
 * and a claim waits for it, so an earlier job for the same message (the safety net, or the one
 * queued by an SMS fallback) cannot send it ahead of its schedule. Null: due now. Frozen in
 * time: never import app code here.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table outbound_messages add column next_attempt_at timestamptz`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table outbound_messages drop column next_attempt_at`.execute(db);
}
