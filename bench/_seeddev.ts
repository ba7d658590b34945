import pg from 'pg';
import { openDatabase } from '../src/db/connect.js';
import { migrateToLatest } from '../src/db/migrate.js';
const INVOICES = 1_000_000; const MERCHANTS = 1000;
const admin = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/postgres' }); await admin.connect();
await admin.query('drop database if exists invoiceiq_statsdev'); await admin.query('create database invoiceiq_statsdev'); await admin.end();
const url = 'postgres://postgres@127.0.0.1:5432/invoiceiq_statsdev';
const h = await openDatabase({ kind: 'postgres', url, poolMax: 2 }); await migrateToLatest(h.db); await h.close();
async function seed(client: pg.Client): Promise<void> {
  await client.query(`insert into merchants (phone, business_name, next_invoice_number)
    select '2547' || lpad(m::text, 8, '0'), 'Merchant ' || m, 1 from generate_series(1, $1) as m`, [MERCHANTS]);
  // Statuses, amounts and days spread deterministically; sent_at/paid_at/due_date consistent with status.
  await client.query(`
    with ids as (select array_agg(id order by phone) as a from merchants)
    insert into invoices (merchant_id, number, customer_phone, amount, description, status, created_at, sent_at, paid_at, due_date)
    select ids.a[1 + i.n % $2], i.n, '2541' || lpad((i.n % 99999999)::text, 8, '0'), 50 + (i.n * 37) % 20000, 'seed',
      (array['pending','sent','paid','paid','failed','cancelled','sent','paid'])[1 + i.n % 8],
      c.created_at,
      case when i.n % 8 = 0 then null else c.created_at + interval '1 minute' end,
      case when (i.n % 8) in (2, 3, 7) then c.created_at + ((i.n % 5000) || ' seconds')::interval else null end,
      (c.created_at + interval '7 days')::date
    from generate_series(1, $1) as i(n)
    cross join ids
    cross join lateral (select timestamptz '2026-08-25 00:00+03' + ((i.n::bigint * 7919) % (89 * 86400)) * interval '1 second' as created_at) c`, [INVOICES, MERCHANTS]);
}

/** Folds the seed's deltas (the stats-fold job's statement), then leaves recent changes unfolded. */
async function settle(client: pg.Client): Promise<{ foldSeconds: number; unfoldedDeltas: number }> {
  const started = performance.now();
  await client.query(`
    with moved as (delete from invoice_stats_delta returning *)
    insert into invoice_stats_daily (day, status, due_date, invoices, amount, ever_sent, paid_after_sent, pay_seconds, pay_count)
    select day, status, due_date, sum(invoices), sum(amount), sum(ever_sent), sum(paid_after_sent), sum(pay_seconds), sum(pay_count)
    from moved group by day, status, due_date
    on conflict (day, status, due_date) do update set invoices = invoice_stats_daily.invoices + excluded.invoices,
      amount = invoice_stats_daily.amount + excluded.amount, ever_sent = invoice_stats_daily.ever_sent + excluded.ever_sent,
      paid_after_sent = invoice_stats_daily.paid_after_sent + excluded.paid_after_sent,
      pay_seconds = invoice_stats_daily.pay_seconds + excluded.pay_seconds, pay_count = invoice_stats_daily.pay_count + excluded.pay_count`);
  const foldSeconds = Math.round((performance.now() - started) / 100) / 10;
  // A minute of traffic between two folds: 1,000 invoices paid.
  await client.query(`update invoices set status = 'paid', paid_at = sent_at + interval '10 minutes'
    where id in (select id from invoices where status = 'sent' order by id limit 1000)`);
  const unfolded = Number((await client.query<{ n: string }>('select count(*) as n from invoice_stats_delta')).rows[0]!.n);
  // As autovacuum would: statistics, and the visibility map that index-only scans need.
  await client.query('vacuum analyze invoices');
  await client.query('vacuum analyze invoice_stats_daily');
  await client.query('vacuum analyze invoice_stats_delta');
  await client.query('analyze');
  return { foldSeconds, unfoldedDeltas: unfolded };
}


const client = new pg.Client({ connectionString: url }); await client.connect();
await seed(client); await settle(client); await client.end(); console.log('seeded', url);
