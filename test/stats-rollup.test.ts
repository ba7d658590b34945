/**
 * The per-day stats rollups (migrations/2026_11_30_0004_stats_rollup.ts, src/stats/summary.ts)
 * on both databases: whatever happens to invoices (inserts, status/amount/due-date/creation
 * changes, deletes, folds in between, concurrent writers and folds, a backfill at migration
 * time), the all-merchant summary read from the rollups equals the one computed from the
 * invoices themselves, for periods cut at Nairobi midnights and different `now`s.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { sql, type Kysely } from 'kysely';
import type { DatabaseHandle } from '../src/db/connect.js';
import type { Database, InvoiceStatus } from '../src/db/schema.js';
import { createMigrator, migrateToLatest } from '../src/db/migrate.js';
import { createLogger } from '../src/logger.js';
import { daily, dailyFromInvoices, foldStatsDeltas, fromInvoices, statsFoldJob, summary, type Period, type Summary } from '../src/stats/summary.js';
import { createEmptyDatabase, createTestDatabase, type TestDatabase } from './helpers/database.js';

const DAY = 86_400_000;
const BASE = Date.parse('2026-11-01T00:00:00Z');
const STATUSES: InvoiceStatus[] = ['pending', 'sent', 'paid', 'failed', 'cancelled'];
const PERIODS: Period[] = [
  { from: '2026-11-10', to: '2026-11-10' }, // one day
  { from: '2026-11-03', to: '2026-11-09' }, // a week
  { from: '2026-10-25', to: '2026-12-01' }, // everything
  { from: '2025-01-01', to: '2025-12-31' }, // nothing
  { from: '2026-11-05', to: '2026-11-12' }, // both ends where invoices cluster around Nairobi midnight
];
const NOWS = ['2026-11-01T09:00:00Z', '2026-11-15T20:59:59Z', '2026-11-15T21:00:00Z', '2026-12-31T12:00:00Z'].map((s) => new Date(s));

let database: TestDatabase;
let db: Kysely<Database>;
const merchants: string[] = [];
let nextNumber = 1;

async function createMerchants(): Promise<void> {
  merchants.length = 0;
  for (let i = 1; i <= 3; i += 1) {
    const row = await db.insertInto('merchants').values({ phone: `2547111000${String(i).padStart(2, '0')}`, business_name: `M${i}` }).returning('id').executeTakeFirstOrThrow();
    merchants.push(row.id);
  }
}

before(async () => {
  database = await createTestDatabase();
  db = database.handle.db;
  await createMerchants();
});
after(() => database.dispose());

/** `summary`'s presentation, applied to the base-table figures. */
async function expectedSummary(d: DatabaseHandle, period: Period, now: Date): Promise<Summary> {
  const row = await fromInvoices(d, period, null, now);
  const n = (v: string | null) => (v === null ? 0 : Number(v));
  const everSent = n(row.ever_sent);
  return {
    invoice_stats: { total: n(row.total), pending: n(row.pending), sent: n(row.sent), paid: n(row.paid), failed: n(row.failed), cancelled: n(row.cancelled), overdue: n(row.overdue) },
    conversion_rate: everSent === 0 ? 0 : Math.round((n(row.paid_after_sent) / everSent) * 1000) / 10,
    average_payment_time_seconds: row.average_payment === null ? null : Math.round(Number(row.average_payment)),
    amounts: { currency: 'KES', invoiced: n(row.invoiced), collected: n(row.collected), outstanding: n(row.outstanding) },
    period,
    generated_at: now.toISOString(),
  };
}

async function assertRollupsMatch(d: DatabaseHandle, label: string, periods = PERIODS, nows = NOWS): Promise<void> {
  for (const period of periods) {
    assert.deepEqual(await daily(d.db, period, null), await dailyFromInvoices(d.db, period, null), `${label}: daily series ${JSON.stringify(period)}`);
    for (const now of nows) {
      assert.deepEqual(await summary(d, period, null, now), await expectedSummary(d, period, now), `${label}: ${JSON.stringify(period)} at ${now.toISOString()}`);
    }
  }
}

const count = async (d: Kysely<Database>, table: 'invoice_stats_daily' | 'invoice_stats_delta' | 'invoice_activity_daily' | 'invoice_activity_delta') =>
  Number((await d.selectFrom(table).select(sql<string>`count(*)`.as('n')).executeTakeFirstOrThrow()).n);

type NewRow = { merchant: number; status: InvoiceStatus; amount: number; createdMs: number; sentAfter: number | null; paidAfter: number | null; dueIn: number | null };

async function insertInvoice(d: Kysely<Database>, r: NewRow): Promise<string> {
  const sent = r.sentAfter === null ? null : new Date(r.createdMs + r.sentAfter);
  const paid = r.paidAfter === null ? null : new Date((sent?.getTime() ?? r.createdMs) + r.paidAfter);
  const row = await d
    .insertInto('invoices')
    .values({
      merchant_id: merchants[r.merchant]!,
      number: nextNumber++,
      customer_phone: '254722000000',
      amount: r.amount,
      description: 'rollup',
      status: r.status,
      created_at: new Date(r.createdMs),
      sent_at: sent,
      paid_at: paid,
      due_date: r.dueIn === null ? null : new Date(r.createdMs + r.dueIn * DAY).toISOString().slice(0, 10),
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return row.id;
}

// Creation times over ~25 days, half of them within an hour of a Nairobi midnight (21:00 UTC).
const createdMs = fc
  .tuple(fc.integer({ min: -3, max: 24 }), fc.oneof(fc.integer({ min: 20 * 3600, max: 22 * 3600 }), fc.integer({ min: 0, max: DAY / 1000 - 1 })), fc.integer({ min: 0, max: 999 }))
  .map(([day, seconds, ms]) => BASE + day * DAY + seconds * 1000 + ms);
const status = fc.constantFrom(...STATUSES);
const newRow: fc.Arbitrary<NewRow> = fc
  .record({
    merchant: fc.integer({ min: 0, max: 2 }),
    status,
    amount: fc.integer({ min: 1, max: 250_000 }),
    createdMs,
    sentAfter: fc.option(fc.integer({ min: 0, max: 5 * DAY }), { freq: 3 }),
    paidAfter: fc.option(fc.integer({ min: 0, max: 3 * DAY }), { freq: 4 }),
    dueIn: fc.option(fc.integer({ min: -5, max: 20 }), { freq: 3 }),
  })
  // Mostly consistent: pending was never sent, only paid invoices have paid_at (a few exceptions stay).
  .map((r) => ({ ...r, sentAfter: r.status === 'pending' ? null : r.sentAfter, paidAfter: r.status === 'paid' ? r.paidAfter : null }));

const pick = fc.nat();
type Op =
  | { op: 'insert'; row: NewRow }
  | { op: 'status'; pick: number; to: InvoiceStatus; after: number }
  | { op: 'amount'; pick: number; amount: number }
  | { op: 'due'; pick: number; dueIn: number | null }
  | { op: 'created'; pick: number; createdMs: number }
  | { op: 'touch'; pick: number }
  | { op: 'delete'; pick: number }
  | { op: 'fold' };
const operation: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('insert' as const), row: newRow }), weight: 4 },
  { arbitrary: fc.record({ op: fc.constant('status' as const), pick, to: status, after: fc.integer({ min: 1, max: 2 * DAY }) }), weight: 2 },
  fc.record({ op: fc.constant('amount' as const), pick, amount: fc.integer({ min: 1, max: 250_000 }) }),
  fc.record({ op: fc.constant('due' as const), pick, dueIn: fc.option(fc.integer({ min: -5, max: 20 })) }),
  fc.record({ op: fc.constant('created' as const), pick, createdMs }),
  fc.record({ op: fc.constant('touch' as const), pick }),
  fc.record({ op: fc.constant('delete' as const), pick }),
  fc.record({ op: fc.constant('fold' as const) }),
);

async function apply(d: Kysely<Database>, op: Op, live: string[]): Promise<void> {
  if (op.op === 'insert') return void live.push(await insertInvoice(d, op.row));
  if (op.op === 'fold') return void (await foldStatsDeltas(d));
  if (live.length === 0) return;
  const id = live[op.pick % live.length]!;
  const invoice = d.updateTable('invoices').where('id', '=', id);
  switch (op.op) {
    case 'status': // sent -> paid sets paid_at after sent_at; -> sent sets sent_at; -> cancelled sets cancelled_at
      await invoice
        .set({
          status: op.to,
          sent_at: op.to === 'sent' ? sql<Date>`coalesce(sent_at, created_at + ${`${op.after} milliseconds`}::interval)` : sql<Date | null>`sent_at`,
          paid_at: op.to === 'paid' ? sql<Date>`coalesce(sent_at, created_at) + ${`${op.after} milliseconds`}::interval` : sql<Date | null>`paid_at`,
          cancelled_at: op.to === 'cancelled' ? sql<Date>`now()` : sql<Date | null>`cancelled_at`,
        })
        .execute();
      return;
    case 'amount':
      return void (await invoice.set({ amount: op.amount }).execute());
    case 'due':
      return void (await invoice.set({ due_date: op.dueIn === null ? null : sql<string>`((created_at at time zone 'UTC') + interval '3 hours')::date + ${op.dueIn}::int` }).execute());
    case 'created':
      return void (await invoice.set({ created_at: new Date(op.createdMs) }).execute());
    case 'touch':
      return void (await invoice.set({ updated_at: sql<Date>`now()`, description: 'touched' }).execute());
    case 'delete':
      await d.deleteFrom('invoices').where('id', '=', id).execute();
      live.splice(live.indexOf(id), 1);
  }
}

test('truncating invoices (directly or by cascade) empties both rollup tables', async () => {
  await insertInvoice(db, { merchant: 0, status: 'sent', amount: 10, createdMs: BASE, sentAfter: 1000, paidAfter: null, dueIn: 3 });
  await foldStatsDeltas(db);
  await insertInvoice(db, { merchant: 1, status: 'pending', amount: 20, createdMs: BASE, sentAfter: null, paidAfter: null, dueIn: null });
  assert.equal(await count(db, 'invoice_stats_daily'), 1);
  assert.equal(await count(db, 'invoice_stats_delta'), 1);
  assert.equal(await count(db, 'invoice_activity_daily'), 1);
  await sql`truncate invoices cascade`.execute(db);
  assert.equal(await count(db, 'invoice_stats_daily'), 0);
  assert.equal(await count(db, 'invoice_stats_delta'), 0);
  assert.equal(await count(db, 'invoice_activity_daily'), 0);
  await assertRollupsMatch(database.handle, 'after truncate');
  // Truncated by cascade from merchants: the trigger on invoices fires too.
  await insertInvoice(db, { merchant: 2, status: 'paid', amount: 30, createdMs: BASE, sentAfter: 1000, paidAfter: 5000, dueIn: 1 });
  await foldStatsDeltas(db);
  await insertInvoice(db, { merchant: 2, status: 'sent', amount: 40, createdMs: BASE, sentAfter: 1000, paidAfter: null, dueIn: 1 });
  await sql`truncate merchants cascade`.execute(db);
  assert.equal(await count(db, 'invoice_stats_daily'), 0);
  assert.equal(await count(db, 'invoice_stats_delta'), 0);
  assert.equal(await count(db, 'invoice_activity_daily'), 0);
  assert.equal(await count(db, 'invoice_activity_delta'), 0);
  await createMerchants();
});

test('property: after any sequence of invoice changes and folds, the rollup summary equals the invoices summary', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(operation, { minLength: 5, maxLength: 30, size: 'max' }), async (ops) => {
      await sql`truncate invoices cascade`.execute(db);
      const live: string[] = [];
      for (const op of ops) await apply(db, op, live);
      await assertRollupsMatch(database.handle, 'before the last fold');
      await foldStatsDeltas(db);
      assert.equal(await count(db, 'invoice_stats_delta'), 0);
      assert.equal(await count(db, 'invoice_activity_delta'), 0);
      await assertRollupsMatch(database.handle, 'after the last fold');
    }),
    { numRuns: 15 },
  );
});

test('folding empties the deltas, changes no figure, is a no-op the second time and drops rows counting nothing', async () => {
  await sql`truncate invoices cascade`.execute(db);
  const a = await insertInvoice(db, { merchant: 0, status: 'sent', amount: 500, createdMs: BASE + 2 * DAY + 20.5 * 3_600_000, sentAfter: 60_000, paidAfter: null, dueIn: 1 });
  await insertInvoice(db, { merchant: 1, status: 'paid', amount: 700, createdMs: BASE + 2 * DAY + 21.5 * 3_600_000, sentAfter: 60_000, paidAfter: 3_600_500, dueIn: null });
  await foldStatsDeltas(db);
  // The sent invoice moves to paid: its (day, 'sent', due) row now counts nothing.
  await db.updateTable('invoices').set({ status: 'paid', paid_at: sql<Date>`sent_at + interval '90 minutes'` }).where('id', '=', a).execute();
  const before = await summary(database.handle, PERIODS[2]!, null, NOWS[3]!);
  // Deltas come summed per rollup key: one out of (day, 'sent', due), one into (day, 'paid', due).
  assert.equal(await count(db, 'invoice_stats_delta'), 2);
  // Activity: its sending day loses and regains one sent (nets to nothing, so no row); its
  // paying day gains one paid.
  assert.equal(await count(db, 'invoice_activity_delta'), 1);
  assert.equal(await foldStatsDeltas(db), 2 + 1);
  assert.equal(await count(db, 'invoice_stats_delta'), 0);
  assert.equal(await count(db, 'invoice_activity_delta'), 0);
  assert.deepEqual(await summary(database.handle, PERIODS[2]!, null, NOWS[3]!), before);
  assert.equal(await foldStatsDeltas(db), 0);
  const zero = await db.selectFrom('invoice_stats_daily').selectAll().where(sql<boolean>`invoices = 0`).execute();
  assert.deepEqual(zero, []);
  // Moving an invoice's payment to another day leaves nothing on the old one: that row goes too.
  await db.updateTable('invoices').set({ paid_at: sql<Date>`paid_at + interval '3 days'` }).where('id', '=', a).execute();
  await foldStatsDeltas(db);
  assert.deepEqual(await db.selectFrom('invoice_activity_daily').selectAll().where(sql<boolean>`sent = 0 and paid = 0 and collected = 0`).execute(), []);
  const statuses = await db.selectFrom('invoice_stats_daily').select('status').distinct().execute();
  assert.deepEqual(statuses.map((r) => r.status), ['paid']);
  await assertRollupsMatch(database.handle, 'after folds');
});

test('an update that changes no tracked column writes no delta', async () => {
  await sql`truncate invoices cascade`.execute(db);
  const id = await insertInvoice(db, { merchant: 2, status: 'sent', amount: 900, createdMs: BASE + 5 * DAY, sentAfter: 1000, paidAfter: null, dueIn: 4 });
  await foldStatsDeltas(db);
  const invoice = db.updateTable('invoices').where('id', '=', id);
  await invoice.set({ updated_at: sql<Date>`now()` }).execute();
  await invoice.set({ description: 'renamed', customer_phone: '254722999999', number: nextNumber++ }).execute();
  await invoice.set({ status: 'sent', amount: 900 }).execute(); // same values: not a change
  assert.equal(await count(db, 'invoice_stats_delta'), 0);
  assert.equal(await count(db, 'invoice_activity_delta'), 0);
  await invoice.set({ amount: 901 }).execute(); // a tracked change: its key's amount goes up by one
  assert.deepEqual(
    await db.selectFrom('invoice_stats_delta').select(['invoices', 'amount', 'ever_sent']).execute(),
    [{ invoices: '0', amount: '1', ever_sent: '0' }],
  );
  // A sent invoice's amount is not in the activity series (collected counts paid ones).
  assert.equal(await count(db, 'invoice_activity_delta'), 0);
});

test('one statement changing many invoices appends its deltas summed per key, not a row per invoice', async () => {
  await sql`truncate invoices cascade`.execute(db);
  const ids: string[] = [];
  for (let i = 0; i < 10; i += 1) ids.push(await insertInvoice(db, { merchant: i % 3, status: 'sent', amount: 100 + i, createdMs: BASE + 3 * DAY + i * 60_000, sentAfter: 1000, paidAfter: null, dueIn: 2 }));
  await foldStatsDeltas(db);
  // Ten invoices paid by one statement (as a group of callbacks does), all on one day.
  await db.updateTable('invoices').set({ status: 'paid', paid_at: sql<Date>`sent_at + interval '5 minutes'` }).where('id', 'in', ids).execute();
  assert.equal(await count(db, 'invoice_stats_delta'), 2, "one row out of (day, 'sent', due), one into (day, 'paid', due)");
  assert.equal(await count(db, 'invoice_activity_delta'), 1, 'one paying day');
  await assertRollupsMatch(database.handle, 'after a ten-invoice statement');
});

test('concurrent writers and folds: the figures stay exact', async () => {
  await sql`truncate invoices cascade`.execute(db);
  const seeded: string[] = [];
  for (let i = 0; i < 16; i += 1) {
    seeded.push(await insertInvoice(db, { merchant: i % 3, status: 'sent', amount: 100 + i, createdMs: BASE + i * 20 * 3_600_000, sentAfter: 60_000, paidAfter: null, dueIn: 2 }));
  }
  const writer = (w: number) =>
    db.transaction().execute(async (trx) => {
      for (let k = 0; k < 3; k += 1) {
        const created = BASE + (w * 3 + k) * 7 * 3_600_000;
        const id = await insertInvoice(trx, { merchant: (w + k) % 3, status: 'pending', amount: 1000 * (w + 1) + k, createdMs: created, sentAfter: null, paidAfter: null, dueIn: k });
        if (k === 1) await trx.updateTable('invoices').set({ status: 'sent', sent_at: new Date(created + 60_000) }).where('id', '=', id).execute();
      }
      // Each writer pays two invoices of its own from the seed (disjoint: no lock waits between writers).
      await trx
        .updateTable('invoices')
        .set({ status: 'paid', paid_at: sql<Date>`sent_at + ${`${w + 1} hours`}::interval` })
        .where('id', 'in', [seeded[2 * w]!, seeded[2 * w + 1]!])
        .execute();
    });
  const folder = async () => {
    let folded = 0;
    for (let i = 0; i < 4; i += 1) {
      folded += await foldStatsDeltas(db);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    return folded;
  };
  await Promise.all([...Array.from({ length: 8 }, (_, w) => writer(w)), folder(), folder(), folder()]);
  await assertRollupsMatch(database.handle, 'after concurrent writes', [PERIODS[2]!, PERIODS[1]!], NOWS);
  await foldStatsDeltas(db);
  assert.equal(await count(db, 'invoice_stats_delta'), 0);
  await assertRollupsMatch(database.handle, 'after the final fold', [PERIODS[2]!, PERIODS[1]!], NOWS);
  const total = await summary(database.handle, PERIODS[2]!, null, NOWS[0]!);
  assert.equal(total.invoice_stats.total, 16 + 8 * 3);
  assert.equal(total.invoice_stats.paid, 16);
});

test('statsFoldJob folds the deltas', async () => {
  await insertInvoice(db, { merchant: 0, status: 'pending', amount: 42, createdMs: BASE + 3 * DAY, sentAfter: null, paidAfter: null, dueIn: null });
  assert.ok((await count(db, 'invoice_stats_delta')) > 0);
  const logger = createLogger({ level: 'silent', format: 'json' });
  await statsFoldJob(db).handle({}, { logger, jobId: 'x', retryCount: 0 });
  assert.equal(await count(db, 'invoice_stats_delta'), 0);
  assert.equal(await count(db, 'invoice_activity_delta'), 0);
  await assertRollupsMatch(database.handle, 'after the job', [PERIODS[2]!], [NOWS[0]!]);
});

test('migrating backfills the rollups from existing invoices; down and up again work', async () => {
  const empty = await createEmptyDatabase();
  try {
    const d = empty.handle.db;
    const migrator = createMigrator(d);
    const check = (r: { error?: unknown }) => assert.equal(r.error, undefined, String(r.error));
    check(await migrator.migrateTo('2026_11_22_0003_dashboard'));
    const ids: string[] = [];
    for (let i = 1; i <= 3; i += 1) {
      ids.push((await d.insertInto('merchants').values({ phone: `2547111000${60 + i}`, business_name: `B${i}` }).returning('id').executeTakeFirstOrThrow()).id);
    }
    const rows = fc.sample(newRow, { numRuns: 40, seed: 4242 });
    let number = 1;
    for (const r of rows) {
      const sent = r.sentAfter === null ? null : new Date(r.createdMs + r.sentAfter);
      await sql`
        insert into invoices (merchant_id, number, customer_phone, amount, description, status, created_at, sent_at, paid_at, due_date)
        values (${ids[r.merchant]!}, ${number++}, '254722000000', ${r.amount}, 'old', ${r.status}, ${new Date(r.createdMs)}, ${sent},
                ${r.paidAfter === null ? null : new Date((sent?.getTime() ?? r.createdMs) + r.paidAfter)},
                ${r.dueIn === null ? null : new Date(r.createdMs + r.dueIn * DAY).toISOString().slice(0, 10)}::date)`.execute(d);
    }
    await migrateToLatest(d);
    assert.equal(await count(d, 'invoice_stats_delta'), 0);
    assert.ok((await count(d, 'invoice_stats_daily')) > 0);
    assert.equal(await count(d, 'invoice_activity_delta'), 0);
    assert.ok((await count(d, 'invoice_activity_daily')) > 0);
    await assertRollupsMatch(empty.handle, 'after the backfill');
    check(await createMigrator(d).migrateTo('2026_11_22_0003_dashboard'));
    const left = await sql<{ n: string }>`select count(*) as n from information_schema.tables where table_name like 'invoice_stats_%' or table_name like 'invoice_activity_%'`.execute(d);
    assert.equal(Number(left.rows[0]!.n), 0);
    await sql`update invoices set amount = amount + 1 where status = 'pending'`.execute(d); // no trigger left to fail
    await migrateToLatest(d);
    await assertRollupsMatch(empty.handle, 'after down and up again');
  } finally {
    await empty.dispose();
  }
});
