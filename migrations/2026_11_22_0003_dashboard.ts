/**
 * Dashboard access and the indexes behind /stats/summary. Frozen in time: never import app code.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // Single-use sign-in links sent to a merchant on WhatsApp (only a hash of the token is kept).
  await db.schema
    .createTable('dashboard_links')
    .addColumn('token_hash', 'text', (c) => c.primaryKey())
    .addColumn('merchant_id', 'uuid', (c) => c.notNull().references('merchants.id').onDelete('cascade'))
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('used_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  // Browser sessions: merchant_id null means the admin (signed in with STATS_API_TOKEN).
  await db.schema
    .createTable('dashboard_sessions')
    .addColumn('token_hash', 'text', (c) => c.primaryKey())
    .addColumn('merchant_id', 'uuid', (c) => c.references('merchants.id').onDelete('cascade'))
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  // /stats/summary reads only these columns: index-only scans by period, for all merchants or one.
  await sql`create index invoices_stats_all_idx on invoices (created_at) include (status, amount, sent_at, paid_at, due_date)`.execute(db);
  await sql`create index invoices_stats_merchant_idx on invoices (merchant_id, created_at) include (status, amount, sent_at, paid_at, due_date)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex('invoices_stats_merchant_idx').execute();
  await db.schema.dropIndex('invoices_stats_all_idx').execute();
  await db.schema.dropTable('dashboard_sessions').execute();
  await db.schema.dropTable('dashboard_links').execute();
}
