/**
 * /stats/summary benchmark (issue 6): 1,000,000 invoices across 1,000 merchants, seeded in SQL
 * on a real Postgres (BENCH_DATABASE_URL). p50/p90 over the endpoint (HTTP, the real app) for
 * all merchants and for one merchant, against the same aggregate written by hand and run
 * directly with pg in the same run: over the invoices (the baseline) and, for all
 * merchants, over the daily rollups the endpoint reads (the best single query there is).
 * The seed goes through the rollup trigger, is folded once (timed), and then a minute's worth
 * of status changes is left unfolded, as between two runs of the fold job. `/healthz` over the
 * same connection gives the HTTP floor of this machine.
 *   npm run bench:stats              (BENCH_INVOICES, BENCH_MERCHANTS, BENCH_RUNS to change the size)
 * Writes bench/results/stats.json. Traffic goes to 127.0.0.1 only; bounded.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import pg from 'pg';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { openDatabase } from '../src/db/connect.js';
import { createDeps } from '../src/deps.js';
import { createLogger } from '../src/logger.js';
import { foldStatsDeltas } from '../src/stats/summary.js';
import { freshDatabase, get, percentile, startServer, stopServer } from './lib.js';

const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;

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
}

/** Folds the seed's deltas (the stats-fold job's own code), then leaves recent changes unfolded. */
async function settle(client: pg.Client, url: string): Promise<{ foldSeconds: number; unfoldedDeltas: number }> {
  const handle = await openDatabase({ kind: 'postgres', url, poolMax: 1 });
  const started = performance.now();
  await foldStatsDeltas(handle.db);
  const foldSeconds = Math.round((performance.now() - started) / 100) / 10;
  await handle.close();
  // A minute of traffic between two folds: 1,000 invoices paid.
  await client.query(`update invoices set status = 'paid', paid_at = sent_at + interval '10 minutes'
    where id in (select id from invoices where status = 'sent' order by id limit 1000)`);
  const unfolded = Number((await client.query<{ n: string }>('select (select count(*) from invoice_stats_delta) + (select count(*) from invoice_activity_delta) as n')).rows[0]!.n);
  // As autovacuum would: statistics, and the visibility map that index-only scans need.
  await client.query('vacuum analyze invoices');
  await client.query('vacuum analyze invoice_stats_daily');
  await client.query('vacuum analyze invoice_stats_delta');
  await client.query('vacuum analyze invoice_activity_daily');
  await client.query('vacuum analyze invoice_activity_delta');
  await client.query('analyze');
  return { foldSeconds, unfoldedDeltas: unfolded };
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

/** The all-merchant aggregate over the rollups, written by hand (what the endpoint runs). */
const handWrittenRollups = `
  select sum(invoices), sum(invoices) filter (where status = 'pending'), sum(invoices) filter (where status = 'sent'),
    sum(invoices) filter (where status = 'paid'), sum(invoices) filter (where status = 'failed'), sum(invoices) filter (where status = 'cancelled'),
    sum(invoices) filter (where status in ('pending','sent','failed') and due_date < current_date),
    sum(ever_sent), sum(paid_after_sent), sum(pay_seconds) / nullif(sum(pay_count), 0),
    sum(amount) filter (where status <> 'cancelled'), sum(amount) filter (where status = 'paid'),
    sum(amount) filter (where status in ('pending','sent','failed'))
  from (select status, due_date, invoices, amount, ever_sent, paid_after_sent, pay_seconds, pay_count from invoice_stats_daily where day between $1 and $2
        union all
        select status, due_date, invoices, amount, ever_sent, paid_after_sent, pay_seconds, pay_count from invoice_stats_delta where day between $1 and $2) f`;

/** p50/p90 of each contender, run round-robin `runs` times after one warm-up round. */
async function interleaved<K extends string>(runs: number, contenders: Record<K, () => Promise<unknown>>): Promise<Record<K, { p50: number; p90: number }>> {
  const names = Object.keys(contenders) as K[];
  const times = Object.fromEntries(names.map((name) => [name, [] as number[]])) as Record<K, number[]>;
  for (let round = -1; round < runs; round += 1) {
    for (const name of names) {
      const started = performance.now();
      await contenders[name]();
      if (round >= 0) times[name].push(performance.now() - started);
    }
  }
  return Object.fromEntries(
    names.map((name) => {
      const sorted = times[name].sort((a, b) => a - b);
      return [name, { p50: percentile(sorted, 50), p90: percentile(sorted, 90) }];
    }),
  ) as Record<K, { p50: number; p90: number }>;
}

async function main(): Promise<void> {
  const db = await freshDatabase();
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  const seeding = performance.now();
  await seed(client);
  const seedSeconds = Math.round((performance.now() - seeding) / 100) / 10;
  const { foldSeconds, unfoldedDeltas } = await settle(client, db.url);
  const merchant = (await client.query<{ id: string; phone: string }>(`select id, phone from merchants order by phone limit 1`)).rows[0]!;
  const start = new Date(`${FROM}T00:00:00+03:00`);
  const end = new Date(new Date(`${TO}T00:00:00+03:00`).getTime() + 86_400_000);

  const { port, child } = await startServer('app', db.url, 'http://127.0.0.1:9');
  // node:http with a keep-alive agent: the client's own cost stays small and steady.
  const fetchSummary = async (query: string): Promise<unknown> => {
    const res = await get(port, `/stats/summary?${query}`, { authorization: `Bearer ${TOKEN}` });
    if (res.status !== 200) throw new Error(`status ${res.status}`);
    return JSON.parse(res.body);
  };
  // The same endpoint in this process through app.request(): routing, middleware, auth and SQL
  // without the socket, to separate the app's own cost from the HTTP floor.
  const inProcess = await openDatabase({ kind: 'postgres', url: db.url, poolMax: 4 });
  const deps = createDeps({
    config: loadConfig({ APP_ENV: 'development', DATABASE_URL: db.url, STATS_API_TOKEN: TOKEN, LOG_LEVEL: 'warn', SIMULATOR: 'off' }),
    logger: createLogger({ level: 'warn', format: 'json' }),
    database: inProcess,
  });
  const app = createApp(deps);
  const request = async (query: string) => {
    const res = await app.request(`/stats/summary?${query}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    if (res.status !== 200) throw new Error(`status ${res.status}`);
    return res.json();
  };
  const all = `from=${FROM}&to=${TO}`;
  const one = `from=${FROM}&to=${TO}&merchant=${merchant.phone}`;

  // Every contender runs once per round, in turn, so all see the same machine (the server's
  // job workers included): a baseline measured before the server started would be flattered.
  const timed = await interleaved(RUNS, {
    sqlAll: () => client.query(handWritten, [start, end]),
    sqlAllRollups: () => client.query(handWrittenRollups, [FROM, TO]),
    sqlOne: () => client.query(`${handWritten} and merchant_id = $3`, [start, end, merchant.id]),
    floor: async () => {
      if ((await get(port, '/healthz')).status !== 200) throw new Error('healthz');
    },
    httpAll: () => fetchSummary(all),
    httpOne: () => fetchSummary(one),
    appAll: () => request(all),
    appOne: () => request(one),
    // The dashboard's daily series for all merchants: the endpoint (activity rollups) and the
    // two aggregates by hand over the invoices it replaced.
    httpDailyAll: async () => {
      const res = await get(port, `/stats/daily?${all}`, { authorization: `Bearer ${TOKEN}` });
      if (res.status !== 200) throw new Error(`status ${res.status}`);
    },
    sqlDailyAll: async () => {
      await client.query(`select to_char(((sent_at at time zone 'UTC') + interval '3 hours')::date, 'YYYY-MM-DD'), count(*) from invoices where sent_at >= $1 and sent_at < $2 group by 1`, [start, end]);
      await client.query(`select to_char(((paid_at at time zone 'UTC') + interval '3 hours')::date, 'YYYY-MM-DD'), count(*), sum(amount) from invoices where status = 'paid' and paid_at >= $1 and paid_at < $2 group by 1`, [start, end]);
    },
  });
  const { sqlAll, sqlAllRollups, sqlOne, floor, httpAll, httpOne, appAll, appOne, httpDailyAll, sqlDailyAll } = timed;
  await inProcess.close();
  const total = ((await fetchSummary(`from=${FROM}&to=${TO}`)) as { invoice_stats: { total: number } }).invoice_stats.total;
  // The endpoint's figures equal the hand-written aggregate over the invoices.
  const fromEndpoint = (await fetchSummary(`from=${FROM}&to=${TO}`)) as { invoice_stats: { paid: number }; amounts: { collected: number } };
  const byHand = (await client.query<{ paid: string; collected: string }>(
    `select count(*) filter (where status = 'paid') as paid, coalesce(sum(amount) filter (where status = 'paid'), 0) as collected from invoices where created_at >= $1 and created_at < $2`,
    [start, end],
  )).rows[0]!;
  if (fromEndpoint.invoice_stats.paid !== Number(byHand.paid) || fromEndpoint.amounts.collected !== Number(byHand.collected)) {
    throw new Error(`figures differ: endpoint ${JSON.stringify(fromEndpoint)} vs ${JSON.stringify(byHand)}`);
  }
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
    fold_seconds: foldSeconds,
    unfolded_deltas_during_runs: unfoldedDeltas,
    runs: RUNS,
    http_floor_ms: floor,
    all_merchants: {
      endpoint_ms: httpAll,
      hand_written_sql_ms: sqlAll,
      ratio_p50: ratio(httpAll.p50, sqlAll.p50),
      hand_written_sql_over_rollups_ms: sqlAllRollups,
      ratio_p50_vs_rollups: ratio(httpAll.p50, sqlAllRollups.p50),
      ratio_p50_vs_rollups_plus_http_floor: ratio(httpAll.p50, sqlAllRollups.p50 + floor.p50),
      in_process_ms: appAll,
      in_process_ratio_p50_vs_rollups: ratio(appAll.p50, sqlAllRollups.p50),
    },
    one_merchant: {
      endpoint_ms: httpOne,
      hand_written_sql_ms: sqlOne,
      ratio_p50: ratio(httpOne.p50, sqlOne.p50),
      ratio_p50_vs_sql_plus_http_floor: ratio(httpOne.p50, sqlOne.p50 + floor.p50),
      in_process_ms: appOne,
      in_process_ratio_p50: ratio(appOne.p50, sqlOne.p50),
    },
    daily_all_merchants: {
      endpoint_ms: httpDailyAll,
      hand_written_sql_over_invoices_ms: sqlDailyAll,
    },
    goals: { p50_ms: 150, ratio_p50: 1.5 },
  };
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/stats.json', `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
}

await main();
