/**
 * The figures behind /stats/summary and the dashboard, computed in SQL: one aggregate query
 * for the summary (FILTER clauses, not one query per status), two for the daily series.
 * Periods are Africa/Nairobi calendar days (UTC+3 all year), `to` inclusive.
 */
import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { addDays, nairobiMidnight, nairobiToday } from '../domain/invoice.js';

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

const nextDay = (day: string) => nairobiMidnight(addDays(day, 1));

export function defaultPeriod(now: Date, days = 30): Period {
  const to = nairobiToday(now);
  return { from: addDays(to, -(days - 1)), to };
}

export async function summary(db: Kysely<Database>, period: Period, merchantId: string | null, now: Date): Promise<Summary> {
  const today = nairobiToday(now);
  const row = await db
    .selectFrom('invoices')
    .select([
      sql<string>`count(*)`.as('total'),
      sql<string>`count(*) filter (where status = 'pending')`.as('pending'),
      sql<string>`count(*) filter (where status = 'sent')`.as('sent'),
      sql<string>`count(*) filter (where status = 'paid')`.as('paid'),
      sql<string>`count(*) filter (where status = 'failed')`.as('failed'),
      sql<string>`count(*) filter (where status = 'cancelled')`.as('cancelled'),
      sql<string>`count(*) filter (where status in ('pending', 'sent', 'failed') and due_date < ${today}::date)`.as('overdue'),
      sql<string>`count(*) filter (where sent_at is not null)`.as('ever_sent'),
      sql<string>`count(*) filter (where sent_at is not null and status = 'paid')`.as('paid_after_sent'),
      sql<string | null>`avg(extract(epoch from paid_at - sent_at)) filter (where status = 'paid' and sent_at is not null and paid_at is not null)`.as('average_payment'),
      sql<string>`coalesce(sum(amount) filter (where status <> 'cancelled'), 0)`.as('invoiced'),
      sql<string>`coalesce(sum(amount) filter (where status = 'paid'), 0)`.as('collected'),
      sql<string>`coalesce(sum(amount) filter (where status in ('pending', 'sent', 'failed')), 0)`.as('outstanding'),
    ])
    .where('created_at', '>=', nairobiMidnight(period.from))
    .where('created_at', '<', nextDay(period.to))
    .$if(merchantId !== null, (q) => q.where('merchant_id', '=', merchantId!))
    .executeTakeFirstOrThrow();
  const everSent = Number(row.ever_sent);
  return {
    invoice_stats: {
      total: Number(row.total),
      pending: Number(row.pending),
      sent: Number(row.sent),
      paid: Number(row.paid),
      failed: Number(row.failed),
      cancelled: Number(row.cancelled),
      overdue: Number(row.overdue),
    },
    conversion_rate: everSent === 0 ? 0 : Math.round((Number(row.paid_after_sent) / everSent) * 1000) / 10,
    average_payment_time_seconds: row.average_payment === null ? null : Math.round(Number(row.average_payment)),
    amounts: { currency: 'KES', invoiced: Number(row.invoiced), collected: Number(row.collected), outstanding: Number(row.outstanding) },
    period,
    generated_at: now.toISOString(),
  };
}

/** Per Nairobi day: invoices sent (by sending day), paid and collected (by paying day). */
export async function daily(db: Kysely<Database>, period: Period, merchantId: string | null): Promise<DailyPoint[]> {
  const start = nairobiMidnight(period.from);
  const end = nextDay(period.to);
  const day = (column: 'sent_at' | 'paid_at') => sql<string>`to_char(${sql.ref(column)} + interval '3 hours', 'YYYY-MM-DD')`;
  const sent = await db
    .selectFrom('invoices')
    .select([day('sent_at').as('day'), sql<string>`count(*)`.as('n')])
    .where('sent_at', '>=', start)
    .where('sent_at', '<', end)
    .$if(merchantId !== null, (q) => q.where('merchant_id', '=', merchantId!))
    .groupBy(sql`1`)
    .execute();
  const paid = await db
    .selectFrom('invoices')
    .select([day('paid_at').as('day'), sql<string>`count(*)`.as('n'), sql<string>`sum(amount)`.as('amount')])
    .where('status', '=', 'paid')
    .where('paid_at', '>=', start)
    .where('paid_at', '<', end)
    .$if(merchantId !== null, (q) => q.where('merchant_id', '=', merchantId!))
    .groupBy(sql`1`)
    .execute();
  const points = new Map<string, DailyPoint>();
  for (let d = period.from; d <= period.to; d = addDays(d, 1)) points.set(d, { day: d, sent: 0, paid: 0, collected: 0 });
  for (const r of sent) points.get(r.day)!.sent = Number(r.n);
  for (const r of paid) {
    const p = points.get(r.day)!;
    p.paid = Number(r.n);
    p.collected = Number(r.amount);
  }
  return [...points.values()];
}
