/**
 * The all-merchant summary reads the daily rollups (0004, 0005), not the invoices: the covering
 * index over every invoice's created_at that served it before (0003) is only written now. Each
 * invoice insert and each change of status, paid_at or due date paid for it: a paid transition
 * wrote about 9.2 WAL records and touched about 32 buffers per invoice with it, 8.2 and 31
 * without (EXPLAIN (ANALYZE, WAL) of the paid update, 128 invoices of 50,000, five runs each).
 * The per-merchant index (merchant_id, created_at) stays: the one-merchant summary and `list`
 * read it. Frozen in time: never import app code here.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`drop index if exists invoices_stats_all_idx`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`create index invoices_stats_all_idx on invoices (created_at) include (status, amount, sent_at, paid_at, due_date)`.execute(db);
}
