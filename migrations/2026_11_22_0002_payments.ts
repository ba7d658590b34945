/**
 * Payments: what an STK push attempt needs beyond the core table, and a once-only record of
 * each reminder sent. Frozen in time: never import app code here.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('payment_attempts')
    // Set when a worker starts the push: a push is never sent twice for one attempt.
    .addColumn('push_started_at', 'timestamptz')
    // Who asked: 'invoice_sent', 'customer', 'merchant_remind'.
    .addColumn('initiated_by', 'text', (c) => c.notNull().defaultTo('invoice_sent'))
    // A callback that could not be applied as is (e.g. the amount paid differs): kept for a person.
    .addColumn('review_reason', 'text')
    .addColumn('last_queried_at', 'timestamptz')
    .addColumn('query_count', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();

  await db.schema
    .createTable('invoice_reminders')
    .addColumn('invoice_id', 'uuid', (c) => c.notNull().references('invoices.id').onDelete('cascade'))
    // 'due_tomorrow' | 'due_today'
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('due_tomorrow', 'due_today')`))
    .addColumn('sent_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('invoice_reminders_pkey', ['invoice_id', 'kind'])
    .execute();

  await db.schema.createIndex('invoices_unpaid_due_idx').on('invoices').column('due_date').where(sql.ref('status'), 'in', sql`('pending', 'sent', 'failed')`).execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex('invoices_unpaid_due_idx').execute();
  await db.schema.dropTable('invoice_reminders').execute();
  await db.schema
    .alterTable('payment_attempts')
    .dropColumn('push_started_at')
    .dropColumn('initiated_by')
    .dropColumn('review_reason')
    .dropColumn('last_queried_at')
    .dropColumn('query_count')
    .execute();
}
