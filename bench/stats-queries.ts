/**
 * The /stats/summary benchmark's baselines: the summary's aggregate written by hand, as one
 * query each (FILTER clauses). bench/stats.ts runs them directly with pg, and the bare Hono
 * handler of bench/webhook-server.ts (baseline mode) serves them over HTTP, so that the
 * endpoint can be compared with the best query both with and without the HTTP hop.
 */

/** Over the invoices, every merchant: `$1`, `$2` the period's first instant and the next day's. */
export const overInvoices = `
  select count(*) total, count(*) filter (where status = 'pending') pending, count(*) filter (where status = 'sent') sent,
    count(*) filter (where status = 'paid') paid, count(*) filter (where status = 'failed') failed, count(*) filter (where status = 'cancelled') cancelled,
    count(*) filter (where status in ('pending','sent','failed') and due_date < current_date) overdue,
    count(*) filter (where sent_at is not null) ever_sent, count(*) filter (where sent_at is not null and status = 'paid') paid_after_sent,
    avg(extract(epoch from paid_at - sent_at)) filter (where status = 'paid' and sent_at is not null and paid_at is not null) average_payment,
    coalesce(sum(amount) filter (where status <> 'cancelled'), 0) invoiced, coalesce(sum(amount) filter (where status = 'paid'), 0) collected,
    coalesce(sum(amount) filter (where status in ('pending','sent','failed')), 0) outstanding
  from invoices where created_at >= $1 and created_at < $2`;

/** One merchant's invoices (`$3` the merchant's id): the covering index by merchant and creation time. */
export const overOneMerchant = `${overInvoices} and merchant_id = $3`;

/** Every merchant, over the daily rollups and the deltas not folded yet: `$1`, `$2` the first and last day. */
export const overRollups = `
  select sum(invoices) total, sum(invoices) filter (where status = 'pending') pending, sum(invoices) filter (where status = 'sent') sent,
    sum(invoices) filter (where status = 'paid') paid, sum(invoices) filter (where status = 'failed') failed, sum(invoices) filter (where status = 'cancelled') cancelled,
    sum(invoices) filter (where status in ('pending','sent','failed') and due_date < current_date) overdue,
    sum(ever_sent) ever_sent, sum(paid_after_sent) paid_after_sent, sum(pay_seconds) / nullif(sum(pay_count), 0) average_payment,
    sum(amount) filter (where status <> 'cancelled') invoiced, sum(amount) filter (where status = 'paid') collected,
    sum(amount) filter (where status in ('pending','sent','failed')) outstanding
  from (select status, due_date, invoices, amount, ever_sent, paid_after_sent, pay_seconds, pay_count from invoice_stats_daily where day between $1 and $2
        union all
        select status, due_date, invoices, amount, ever_sent, paid_after_sent, pay_seconds, pay_count from invoice_stats_delta where day between $1 and $2) f`;
