/**
 * /stats/summary benchmark (issue 6): 1,000,000 invoices across 1,000 merchants, seeded in SQL
 * on a real Postgres (BENCH_DATABASE_URL). p50/p90 over the endpoint (HTTP, the real app) for
 * all merchants and for one merchant, against the same aggregate written by hand and run
 * directly with pg in the same run (the best single query: the baseline).
 *   npm run bench:stats              (BENCH_INVOICES, BENCH_MERCHANTS, BENCH_RUNS to change the size)
 * Writes bench/results/stats.json. Traffic goes to 127.0.0.1 only; bounded.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import pg from 'pg';
import { freshDatabase, percentile, startServer, stopServer } from './lib.js';

const INVOICES = Number(process.env.BENCH_INVOICES ?? 1_000_000);
const MERCHANTS = Number(process.env.BENCH_MERCHANTS ?? 1_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const TOKEN = 'bench-stats-token-0123456789abcdef0123';
const FROM = '2026-08-25';
const TO = '2026-11-22';

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
  // As autovacuum would: statistics, and the visibility map that index-only scans need.
  await client.query('vacuum analyze invoices');
  await client.query('analyze');
}

/** The aggregate the endpoint runs, written by hand (one query, FILTER clauses). */
const handWritten = `
  select count(*), count(*) filter (where status = 'pending'), count(*) filter (where status = 'sent'),
    count(*) filter (where status = 'paid'), count(*) filter (where status = 'failed'), count(*) filter (where status = 'cancelled'),
    count(*) filter (where status in ('pending','sent','failed') and due_date < current_date),
    count(*) filter (where sent_at is not null), count(*) filter (where sent_at is not null and status = 'paid'),
    avg(extract(epoch from paid_at - sent_at)) filter (where status = 'paid' and sent_at is not null and paid_at is not null),
    coalesce(sum(amount) filter (where status <> 'cancelled'), 0), coalesce(sum(amount) filter (where status = 'paid'), 0),
    coalesce(sum(amount) filter (where status in ('pending','sent','failed')), 0)
  from invoices where created_at >= $1 and created_at < $2`;

async function timeIt(runs: number, run: () => Promise<unknown>): Promise<{ p50: number; p90: number }> {
  await run(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < runs; i += 1) {
    const started = performance.now();
    await run();
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p90: percentile(times, 90) };
}

async function main(): Promise<void> {
  const db = await freshDatabase();
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  const seeding = performance.now();
  await seed(client);
  const seedSeconds = Math.round((performance.now() - seeding) / 100) / 10;
  const merchant = (await client.query<{ id: string; phone: string }>(`select id, phone from merchants order by phone limit 1`)).rows[0]!;
  const start = new Date(`${FROM}T00:00:00+03:00`);
  const end = new Date(new Date(`${TO}T00:00:00+03:00`).getTime() + 86_400_000);

  const sqlAll = await timeIt(RUNS, () => client.query(handWritten, [start, end]));
  const sqlOne = await timeIt(RUNS, () => client.query(`${handWritten} and merchant_id = $3`, [start, end, merchant.id]));

  const { port, child } = await startServer('app', db.url, 'http://127.0.0.1:9');
  const fetchSummary = async (query: string) => {
    const res = await fetch(`http://127.0.0.1:${port}/stats/summary?${query}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    if (res.status !== 200) throw new Error(`status ${res.status}`);
    return res.json();
  };
  const httpAll = await timeIt(RUNS, () => fetchSummary(`from=${FROM}&to=${TO}`));
  const httpOne = await timeIt(RUNS, () => fetchSummary(`from=${FROM}&to=${TO}&merchant=${merchant.phone}`));
  const total = ((await fetchSummary(`from=${FROM}&to=${TO}`)) as { invoice_stats: { total: number } }).invoice_stats.total;
  await stopServer(child);
  await client.end();
  await db.drop();

  const results = {
    date: new Date().toISOString(),
    node: process.version,
    invoices: INVOICES,
    merchants: MERCHANTS,
    counted_in_period: total,
    seed_seconds: seedSeconds,
    runs: RUNS,
    all_merchants: { endpoint_ms: httpAll, hand_written_sql_ms: sqlAll, ratio_p50: Math.round((httpAll.p50 / sqlAll.p50) * 100) / 100 },
    one_merchant: { endpoint_ms: httpOne, hand_written_sql_ms: sqlOne, ratio_p50: Math.round((httpOne.p50 / sqlOne.p50) * 100) / 100 },
    goals: { p50_ms: 150, ratio_p50: 1.5 },
  };
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/stats.json', `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
}

await main();
