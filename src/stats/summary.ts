/**
 * The figures behind /stats/summary and the dashboard, computed in SQL: one aggregate query
 * for the summary (FILTER clauses, not one query per status), two for the daily series.
 * Periods are Africa/Nairobi calendar days (UTC+3 all year), `to` inclusive.
 *
 * One merchant's summary reads that merchant's invoices (a covering index by merchant and
 * creation time). The all-merchant summary reads the per-day rollups instead
 * (migrations/2026_11_30_0004_stats_rollup.ts): the folded daily rows plus the deltas not yet
 * folded, in one statement, so it is exact at every moment and reads a few rows per day
 * instead of every invoice.
 */
import { sql, type Kysely } from 'kysely';
import type { DatabaseHandle } from '../db/connect.js';
import type { Database } from '../db/schema.js';
import { addDays, nairobiMidnight, nairobiToday } from '../domain/invoice.js';
import { scheduledJob, type JobDefinition, type NoJobData } from '../jobs/queue.js';


export type Period = { from: string; to: string };

export type Summary = {
  invoice_stats: { total: number; pending: number; sent: number; paid: number; failed: number; cancelled: number; overdue: number };
  conversion_rate: number;
  average_payment_time_seconds: number | null;
  amounts: { currency: 'KES'; invoiced: number; collected: number; outstanding: number };
  period: Period;
  generated_at: string;
};

export type DailyPoint = { day: string; sent: number; paid: number; collected: number };

/**
 * Whose figures: every merchant (null), one merchant by id, or one by phone (resolved inside
 * the same query, so a summary by phone is one round trip; an unknown phone has nothing).
 */
export type MerchantScope = null | { id: string } | { phone: string };

function merchantFilter(scope: Exclude<MerchantScope, null>) {
  return 'id' in scope ? sql<boolean>`merchant_id = ${scope.id}` : sql<boolean>`merchant_id = (select id from merchants where phone = ${scope.phone})`;
}

const nextDay = (day: string) => nairobiMidnight(addDays(day, 1));

export function defaultPeriod(now: Date, days = 30): Period {
  const to = nairobiToday(now);
  return { from: addDays(to, -(days - 1)), to };
}

type SummaryRow = {
  total: string | null;
  pending: string | null;
  sent: string | null;
  paid: string | null;
  failed: string | null;
  cancelled: string | null;
  overdue: string | null;
  ever_sent: string | null;
  paid_after_sent: string | null;
  average_payment: string | null;
  invoiced: string | null;
  collected: string | null;
  outstanding: string | null;
};

/**
 * What the summary reads through. Its queries are fixed texts run as named statements on the
 * pool: each connection parses and plans them once, not on every request (on the all-merchant
 * summary that is a fifth of the query's time). The texts are static, so there is no query
 * builder on this path either.
 */
export type StatsDatabase = Pick<DatabaseHandle, 'pool'>;

export async function summary(database: StatsDatabase, period: Period, merchant: MerchantScope, now: Date): Promise<Summary> {
  const row = merchant === null ? await fromRollups(database, period, now) : await fromInvoices(database, period, merchant, now);
  return present(row, period, now);
}

/** The summary's figures over the invoices; `$1`..`$3` are the period's start and end and today. */
const FIGURES_OVER_INVOICES = `
  select
    count(*) as total,
    count(*) filter (where status = 'pending') as pending,
    count(*) filter (where status = 'sent') as sent,
    count(*) filter (where status = 'paid') as paid,
    count(*) filter (where status = 'failed') as failed,
    count(*) filter (where status = 'cancelled') as cancelled,
    count(*) filter (where status in ('pending', 'sent', 'failed') and due_date < $3::date) as overdue,
    count(*) filter (where sent_at is not null) as ever_sent,
    count(*) filter (where sent_at is not null and status = 'paid') as paid_after_sent,
    avg(extract(epoch from paid_at - sent_at)) filter (where status = 'paid' and sent_at is not null and paid_at is not null) as average_payment,
    coalesce(sum(amount) filter (where status <> 'cancelled'), 0) as invoiced,
    coalesce(sum(amount) filter (where status = 'paid'), 0) as collected,
    coalesce(sum(amount) filter (where status in ('pending', 'sent', 'failed')), 0) as outstanding
  from invoices
  where created_at >= $1 and created_at < $2`;

/** Named statements: a name always goes with the same text (pg refuses anything else). */
const statements = {
  invoices: { name: 'stats_summary_invoices', text: FIGURES_OVER_INVOICES },
  merchantById: { name: 'stats_summary_merchant_id', text: `${FIGURES_OVER_INVOICES} and merchant_id = $4` },
  // By phone, resolved in the same statement: one round trip, and an unknown phone has nothing.
  merchantByPhone: { name: 'stats_summary_merchant_phone', text: `${FIGURES_OVER_INVOICES} and merchant_id = (select id from merchants where phone = $4)` },
  // The folded daily rows plus the deltas not folded yet; `$1`, `$2` the first and last day, `$3` today.
  rollups: {
    name: 'stats_summary_rollups',
    text: `
  select
    sum(invoices) as total,
    sum(invoices) filter (where status = 'pending') as pending,
    sum(invoices) filter (where status = 'sent') as sent,
    sum(invoices) filter (where status = 'paid') as paid,
    sum(invoices) filter (where status = 'failed') as failed,
    sum(invoices) filter (where status = 'cancelled') as cancelled,
    sum(invoices) filter (where status in ('pending', 'sent', 'failed') and due_date < $3::date) as overdue,
    sum(ever_sent) as ever_sent,
    sum(paid_after_sent) as paid_after_sent,
    sum(pay_seconds) / nullif(sum(pay_count), 0) as average_payment,
    sum(amount) filter (where status <> 'cancelled') as invoiced,
    sum(amount) filter (where status = 'paid') as collected,
    sum(amount) filter (where status in ('pending', 'sent', 'failed')) as outstanding
  from (
    select status, due_date, invoices, amount, ever_sent, paid_after_sent, pay_seconds, pay_count
      from invoice_stats_daily where day between $1::date and $2::date
    union all
    select status, due_date, invoices, amount, ever_sent, paid_after_sent, pay_seconds, pay_count
      from invoice_stats_delta where day between $1::date and $2::date
  ) as figures`,
  },
} as const;

async function one(database: StatsDatabase, statement: { name: string; text: string }, values: unknown[]): Promise<SummaryRow> {
  const result = await database.pool.query<SummaryRow>({ name: statement.name, text: statement.text, values });
  return result.rows[0]!;
}

/** The summary computed from the invoices themselves (one merchant; or, for checks, all). */
export async function fromInvoices(database: StatsDatabase, period: Period, merchant: MerchantScope, now: Date): Promise<SummaryRow> {
  const values: unknown[] = [nairobiMidnight(period.from), nextDay(period.to), nairobiToday(now)];
  if (merchant === null) return one(database, statements.invoices, values);
  return 'id' in merchant
    ? one(database, statements.merchantById, [...values, merchant.id])
    : one(database, statements.merchantByPhone, [...values, merchant.phone]);
}

/** All merchants, from the daily rollups and the deltas not yet folded into them. */
async function fromRollups(database: StatsDatabase, period: Period, now: Date): Promise<SummaryRow> {
  return one(database, statements.rollups, [period.from, period.to, nairobiToday(now)]);
}

/** Folds the deltas written since the last run into the daily rollups (one statement: atomic). */
export async function foldStatsDeltas(db: Kysely<Database>): Promise<number> {
  const result = await sql<{ folded: string }>`
    with moved as (
      delete from invoice_stats_delta returning *
    ), grouped as (
      select day, status, due_date, sum(invoices) as invoices, sum(amount) as amount, sum(ever_sent) as ever_sent,
        sum(paid_after_sent) as paid_after_sent, sum(pay_seconds) as pay_seconds, sum(pay_count) as pay_count, count(*) as n
      from moved group by day, status, due_date
    ), upserted as (
      insert into invoice_stats_daily (day, status, due_date, invoices, amount, ever_sent, paid_after_sent, pay_seconds, pay_count)
      select day, status, due_date, invoices, amount, ever_sent, paid_after_sent, pay_seconds, pay_count from grouped
      on conflict (day, status, due_date) do update set
        invoices = invoice_stats_daily.invoices + excluded.invoices,
        amount = invoice_stats_daily.amount + excluded.amount,
        ever_sent = invoice_stats_daily.ever_sent + excluded.ever_sent,
        paid_after_sent = invoice_stats_daily.paid_after_sent + excluded.paid_after_sent,
        pay_seconds = invoice_stats_daily.pay_seconds + excluded.pay_seconds,
        pay_count = invoice_stats_daily.pay_count + excluded.pay_count
    )
    select coalesce(sum(n), 0) as folded from grouped`.execute(db);
  // Rows whose invoices all moved elsewhere (status changes) count nothing: drop them.
  await sql`delete from invoice_stats_daily where invoices = 0 and amount = 0 and ever_sent = 0 and pay_count = 0`.execute(db);
  const activity = await sql<{ folded: string }>`
    with moved as (
      delete from invoice_activity_delta returning *
    ), grouped as (
      select day, sum(sent) as sent, sum(paid) as paid, sum(collected) as collected, count(*) as n from moved group by day
    ), upserted as (
      insert into invoice_activity_daily (day, sent, paid, collected)
      select day, sent, paid, collected from grouped
      on conflict (day) do update set
        sent = invoice_activity_daily.sent + excluded.sent,
        paid = invoice_activity_daily.paid + excluded.paid,
        collected = invoice_activity_daily.collected + excluded.collected
    )
    select coalesce(sum(n), 0) as folded from grouped`.execute(db);
  await sql`delete from invoice_activity_daily where sent = 0 and paid = 0 and collected = 0`.execute(db);
  return Number(result.rows[0]?.folded ?? 0) + Number(activity.rows[0]?.folded ?? 0);
}

function present(row: SummaryRow, period: Period, now: Date): Summary {
  const n = (value: string | null) => (value === null ? 0 : Number(value));
  const everSent = n(row.ever_sent);
  return {
    invoice_stats: {
      total: n(row.total),
      pending: n(row.pending),
      sent: n(row.sent),
      paid: n(row.paid),
      failed: n(row.failed),
      cancelled: n(row.cancelled),
      overdue: n(row.overdue),
    },
    conversion_rate: everSent === 0 ? 0 : Math.round((n(row.paid_after_sent) / everSent) * 1000) / 10,
    average_payment_time_seconds: row.average_payment === null ? null : Math.round(Number(row.average_payment)),
    amounts: { currency: 'KES', invoiced: n(row.invoiced), collected: n(row.collected), outstanding: n(row.outstanding) },
    period,
    generated_at: now.toISOString(),
  };
}

/** Per Nairobi day: invoices sent (by sending day), paid and collected (by paying day). */
/**
 * The daily series: invoices sent, invoices paid and the amount collected per Nairobi day.
 * All merchants read the activity rollups (migrations/2026_12_01_0005_activity_rollup.ts) and
 * their unfolded deltas; one merchant reads that merchant's invoices.
 */
export async function daily(db: Kysely<Database>, period: Period, merchant: MerchantScope): Promise<DailyPoint[]> {
  if (merchant !== null) return dailyFromInvoices(db, period, merchant);
  const { rows } = await sql<{ day: string; sent: string; paid: string; collected: string }>`
    select to_char(day, 'YYYY-MM-DD') as day, sum(sent) as sent, sum(paid) as paid, sum(collected) as collected
    from (
      select day, sent, paid, collected from invoice_activity_daily where day between ${period.from}::date and ${period.to}::date
      union all
      select day, sent, paid, collected from invoice_activity_delta where day between ${period.from}::date and ${period.to}::date
    ) as figures
    group by day`.execute(db);
  return series(period, rows.map((r) => ({ day: r.day, sent: Number(r.sent), paid: Number(r.paid), collected: Number(r.collected) })));
}

/** The daily series computed from the invoices themselves (one merchant; or, for checks, all). */
export async function dailyFromInvoices(db: Kysely<Database>, period: Period, merchant: MerchantScope): Promise<DailyPoint[]> {
  const start = nairobiMidnight(period.from);
  const end = nextDay(period.to);
  // The Nairobi day, whatever the session's time zone.
  const day = (column: 'sent_at' | 'paid_at') => sql<string>`to_char(((${sql.ref(column)} at time zone 'UTC') + interval '3 hours')::date, 'YYYY-MM-DD')`;
  const sent = await db
    .selectFrom('invoices')
    .select([day('sent_at').as('day'), sql<string>`count(*)`.as('n')])
    .where('sent_at', '>=', start)
    .where('sent_at', '<', end)
    .$if(merchant !== null, (q) => q.where(merchantFilter(merchant!)))
    .groupBy(sql`1`)
    .execute();
  const paid = await db
    .selectFrom('invoices')
    .select([day('paid_at').as('day'), sql<string>`count(*)`.as('n'), sql<string>`sum(amount)`.as('amount')])
    .where('status', '=', 'paid')
    .where('paid_at', '>=', start)
    .where('paid_at', '<', end)
    .$if(merchant !== null, (q) => q.where(merchantFilter(merchant!)))
    .groupBy(sql`1`)
    .execute();
  return series(period, [
    ...sent.map((r) => ({ day: r.day, sent: Number(r.n), paid: 0, collected: 0 })),
    ...paid.map((r) => ({ day: r.day, sent: 0, paid: Number(r.n), collected: Number(r.amount) })),
  ]);
}

/** Every day of the period, in order, with the figures summed in (zero where nothing happened). */
function series(period: Period, figures: readonly DailyPoint[]): DailyPoint[] {
  const points = new Map<string, DailyPoint>();
  // Counted, not compared: the loop ends whatever the days look like.
  const days = Math.round((nairobiMidnight(period.to).getTime() - nairobiMidnight(period.from).getTime()) / 86_400_000) + 1;
  for (let i = 0; i < days; i += 1) {
    const d = addDays(period.from, i);
    points.set(d, { day: d, sent: 0, paid: 0, collected: 0 });
  }
  for (const f of figures) {
    const point = points.get(f.day);
    if (point === undefined) continue;
    point.sent += f.sent;
    point.paid += f.paid;
    point.collected += f.collected;
  }
  return [...points.values()];
}

/** Folds the stats deltas into the daily rollups; scheduled every minute (once across instances). */
export function statsFoldJob(db: Kysely<Database>): JobDefinition<NoJobData> {
  return scheduledJob('stats-fold', async ({ logger }) => {
    const folded = await foldStatsDeltas(db);
    if (folded > 0) logger.debug({ folded }, 'stats deltas folded');
  });
}
