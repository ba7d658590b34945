/**
 * An admin's dashboard session names the STATS_API_TOKEN it was opened with (an HMAC of it,
 * never the token): a session outlives a rotated or removed token no longer. Admin sessions
 * opened before this migration have none and end (the admin signs in again). Frozen in time:
 * never import app code here.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table dashboard_sessions add column admin_key text`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table dashboard_sessions drop column admin_key`.execute(db);
}
