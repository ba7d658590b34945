/**
 * Inbound events waiting for a retry get a last-change time, so a sweep can find those whose
 * retry job is gone (failed after all its own retries, or deleted) and queue them again; a
 * partial index keeps that a small read. Frozen in time: never import app code here.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table inbound_events add column updated_at timestamptz not null default now()`.execute(db);
  await sql`update inbound_events set updated_at = coalesce(processed_at, received_at)`.execute(db);
  await sql`create index inbound_events_retrying_idx on inbound_events (updated_at) where status = 'retrying'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index inbound_events_retrying_idx`.execute(db);
  await sql`alter table inbound_events drop column updated_at`.execute(db);
}
