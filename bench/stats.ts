/**
 * /stats/summary benchmark (issue 6): 1,000,000 invoices across 1,000 merchants, seeded in SQL
 * on a real Postgres (BENCH_DATABASE_URL). p50/p90 of the endpoint (HTTP, the real app) for
 * all merchants and for one merchant, against the best single hand-written aggregate query,
 * measured in the same run, taking turns:
 * - run directly with pg, ad hoc and as a prepared statement (the best of the two is "the best
 *   query"): over the invoices (the baseline) and, for all merchants, over the daily
 *   rollups the endpoint reads (the best single query there is);
 * - served over HTTP by a bare Hono handler (bench/webhook-server.ts, baseline mode) running
 *   that query as a prepared statement: the same HTTP hop as the endpoint, so the ratio of the
 *   two is what the endpoint's own work (credential, parameters, query, JSON) adds. That ratio
 *   is the goal's (<= 1.5); the ratio to the query without the hop is reported beside it.
 * The seed goes through the rollup trigger, is folded once (timed), and then a minute's worth
 * of status changes is left unfolded, as between two runs of the fold job. `/healthz` over the
 * same connection gives the HTTP floor of this machine.
 *   npm run bench:stats   (BENCH_INVOICES, BENCH_MERCHANTS, BENCH_RUNS (fast contenders),
 *                          BENCH_SLOW_RUNS (the aggregates over all invoices) to change the size)
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
import { overInvoices, overOneMerchant, overRollups } from './stats-queries.js';

const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;

const INVOICES = Number(process.env.BENCH_INVOICES ?? 1_000_000);
const MERCHANTS = Number(process.env.BENCH_MERCHANTS ?? 1_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 300);
const SLOW_RUNS = Number(process.env.BENCH_SLOW_RUNS ?? 20);
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

  const { port: basePort, child: baseChild } = await startServer('baseline', db.url, 'http://127.0.0.1:9');
  const served = async (path: string) => {
    const res = await get(basePort, path);
    if (res.status !== 200) throw new Error(`baseline status ${res.status}`);
    return JSON.parse(res.body) as unknown;
  };
  const oneArgs = [start, end, merchant.id];

  // Every contender runs once per round, in turn, so all see the same moments of the machine
  // (the server's job workers included): a baseline measured before the server started would
  // be flattered. The aggregates over all the invoices take a second each: they take their
  // turns in a round of their own, fewer times.
  const timed = await interleaved(RUNS, {
    floor: async () => {
      if ((await get(port, '/healthz')).status !== 200) throw new Error('healthz');
    },
    sqlRollups: () => client.query(overRollups, [FROM, TO]),
    sqlRollupsPrepared: () => client.query({ name: 'rollups', text: overRollups, values: [FROM, TO] }),
    servedAll: () => served(`/stats-baseline/all?from=${FROM}&to=${TO}`),
    httpAll: () => fetchSummary(all),
    appAll: () => request(all),
    sqlOne: () => client.query(overOneMerchant, oneArgs),
    sqlOnePrepared: () => client.query({ name: 'one', text: overOneMerchant, values: oneArgs }),
    servedOne: () => served(`/stats-baseline/one?from=${FROM}&to=${TO}&merchant=${merchant.id}`),
    httpOne: () => fetchSummary(one),
    appOne: () => request(one),
    // The dashboard's daily series for all merchants (activity rollups).
    httpDailyAll: async () => {
      const res = await get(port, `/stats/daily?${all}`, { authorization: `Bearer ${TOKEN}` });
      if (res.status !== 200) throw new Error(`status ${res.status}`);
    },
  });
  const slow = await interleaved(SLOW_RUNS, {
    sqlAll: () => client.query(overInvoices, [start, end]),
    // The two aggregates by hand over the invoices that the daily series' rollups replaced.
    sqlDailyAll: async () => {
      await client.query(`select to_char(((sent_at at time zone 'UTC') + interval '3 hours')::date, 'YYYY-MM-DD'), count(*) from invoices where sent_at >= $1 and sent_at < $2 group by 1`, [start, end]);
      await client.query(`select to_char(((paid_at at time zone 'UTC') + interval '3 hours')::date, 'YYYY-MM-DD'), count(*), sum(amount) from invoices where status = 'paid' and paid_at >= $1 and paid_at < $2 group by 1`, [start, end]);
    },
    httpAll: () => fetchSummary(all),
  });
  const { floor, sqlRollups, sqlRollupsPrepared, servedAll, httpAll, appAll, sqlOne, sqlOnePrepared, servedOne, httpOne, appOne, httpDailyAll } = timed;
  const { sqlAll, sqlDailyAll } = slow;
  const best = (a: { p50: number; p90: number }, b: { p50: number; p90: number }) => (a.p50 <= b.p50 ? a : b);
  const bestAll = best(sqlRollups, sqlRollupsPrepared);
  const bestOne = best(sqlOne, sqlOnePrepared);
  // The endpoint's answers equal the bare handler's (the same figures, read another way).
  for (const [query, path] of [[all, 'all'], [one, 'one']] as const) {
    const endpoint = (await fetchSummary(query)) as { invoice_stats: Record<string, number>; amounts: Record<string, number> };
    const bare = (await served(`/stats-baseline/${path}?from=${FROM}&to=${TO}&merchant=${merchant.id}`)) as Record<string, string | null>;
    const pairs = [...Object.entries(endpoint.invoice_stats), ...Object.entries(endpoint.amounts).filter(([k]) => k !== 'currency')];
    for (const [key, value] of pairs) {
      if (value !== Number(bare[key] ?? 0)) throw new Error(`${path}: ${key} differs: endpoint ${value}, bare query ${bare[key]}`);
    }
  }
  await stopServer(baseChild);
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
    slow_runs: SLOW_RUNS,
    http_floor_ms: floor,
    all_merchants: {
      endpoint_ms: httpAll,
      best_query_ms: { ad_hoc: sqlRollups, prepared: sqlRollupsPrepared },
      best_query_served_by_bare_hono_ms: servedAll,
      ratio_p50_vs_served_best_query: ratio(httpAll.p50, servedAll.p50),
      ratio_p50_vs_best_query: ratio(httpAll.p50, bestAll.p50),
      in_process_ms: appAll,
      in_process_ratio_p50_vs_best_query: ratio(appAll.p50, bestAll.p50),
      hand_written_sql_over_invoices_ms: sqlAll,
      ratio_p50_vs_sql_over_invoices: ratio(slow.httpAll.p50, sqlAll.p50),
    },
    one_merchant: {
      endpoint_ms: httpOne,
      best_query_ms: { ad_hoc: sqlOne, prepared: sqlOnePrepared },
      best_query_served_by_bare_hono_ms: servedOne,
      ratio_p50_vs_served_best_query: ratio(httpOne.p50, servedOne.p50),
      ratio_p50_vs_best_query: ratio(httpOne.p50, bestOne.p50),
      in_process_ms: appOne,
      in_process_ratio_p50_vs_best_query: ratio(appOne.p50, bestOne.p50),
    },
    daily_all_merchants: {
      endpoint_ms: httpDailyAll,
      hand_written_sql_over_invoices_ms: sqlDailyAll,
    },
    goals: {
      p50_ms: 150,
      ratio_p50: 1.5,
      ratio_measured_as: 'endpoint p50 / p50 of the best hand-written query served by a bare Hono handler (the same HTTP hop)',
      met: httpAll.p50 < 150 && httpOne.p50 < 150 && ratio(httpAll.p50, servedAll.p50) <= 1.5 && ratio(httpOne.p50, servedOne.p50) <= 1.5,
    },
  };
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/stats.json', `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
}

await main();
