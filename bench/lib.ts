/**
 * Shared pieces of the HTTP benchmarks: fresh migrated Postgres databases, the server child
 * process (bench/webhook-server.ts), and closed/open-loop load generators. Traffic goes to
 * 127.0.0.1 only; every loop is bounded in time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Agent, request } from 'node:http';
import pg from 'pg';
import { openDatabase } from '../src/db/connect.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { installJobSchema, withDatabase } from '../test/helpers/database.js';

export const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** A new database, migrated, with pg-boss's schema; drop() removes it. */
export async function freshDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `invoiceiq_bench_${Date.now()}_${randomBytes(2).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`create database "${name}"`);
  await admin.end();
  const url = withDatabase(adminUrl, name);
  const handle = await openDatabase({ kind: 'postgres', url, poolMax: 2 });
  await migrateToLatest(handle.db);
  await installJobSchema(handle.pool);
  await handle.close();
  return {
    url,
    async drop() {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      await c.query(`drop database if exists "${name}" with (force)`);
      await c.end();
    },
  };
}

/**
 * The V8 flags the service runs with, as deployed (Dockerfile CMD, `npm start`,
 * `npm run start:prod`; test/deploy.test.ts keeps them the same): a young generation of 64 MB
 * semi-spaces instead of 16 MB. Under webhook load the app makes short-lived garbage fast;
 * with the default, scavenges took ~16% of its busy CPU, and 32 MB cut its CPU per message
 * by 10-25% in A/B runs; 64 MB cut the server's CPU per STK callback by a further 8-15%
 * (5 of 5 A/B pairs, 256 clients) at the same peak memory; 128 MB took ~470 MB at peak
 * (README, Benchmarks). The bare baselines run with Node's defaults.
 */
export const APP_NODE_FLAGS = ['--max-semi-space-size=64'];

/** Child processes still running: killed if the benchmark exits early (an error), so none outlives it. */
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});
function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Starts bench/webhook-server.ts in `mode` (app or baseline) in a child process. */
export function startServer(mode: 'app' | 'baseline', url: string, graphUrl: string, env: Record<string, string> = {}): Promise<{ port: number; child: ChildProcess }> {
  const profile = process.env.BENCH_CPU_PROF === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`];
  const flags = mode === 'app' ? APP_NODE_FLAGS : [];
  const child = track(
    spawn(process.execPath, [...profile, ...flags, '--import', 'tsx', 'bench/webhook-server.ts', mode, url, graphUrl], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } }),
  );
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /READY (\d+)/.exec(out);
      if (match) resolve({ port: Number(match[1]), child });
    });
    child.once('exit', (code) => reject(new Error(`${mode} server exited with ${code}`)));
  });
}

export async function stopServer(child: ChildProcess): Promise<void> {
  child.removeAllListeners('exit');
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

export type BenchRequest = { path: string; body: string; headers?: Record<string, string> };

const agent = new Agent({ keepAlive: true, maxSockets: 256 });

export function post(port: number, r: BenchRequest, timeoutMs = 10_000): Promise<{ status: number; ms: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path: r.path, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(r.body), ...r.headers } },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - started }));
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(r.body);
  });
}

/** GET over the same keep-alive agent; resolves with the status and the body. */
export function get(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', agent, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Fixed concurrency for `seconds`; counts 200s as done, anything else as errors. With a
 * `settle`, `seconds` is the time until the work the requests left behind was done too
 * (`settleMs` of it after the last answer), and the CPU is counted over that whole time.
 */
export type LoopResult = { rps: number; requests: number; errors: number; seconds?: number; settleMs?: number; cpuMsPerRequest?: CpuShare };

/**
 * `concurrency` clients, each sending its next request as soon as the last is answered, for
 * `seconds`; the rate counts the time until the last answer (the requests still in flight at
 * the deadline are counted, and so is the time they took: at 256 clients and 85 ms an answer,
 * 4% of a 2 s turn). Then `settle`, if given: resolves once the server has finished what the
 * requests left for later (receipts still to send). The rate counts that time too, so work
 * deferred past the load (or done during another contender's turn) is not free.
 */
export async function closedLoop(
  port: number,
  seconds: number,
  concurrency: number,
  next: () => BenchRequest,
  server?: ChildProcess,
  settle?: () => Promise<void>,
): Promise<LoopResult> {
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let requests = 0;
  let errors = 0;
  const cpuBefore = cpuSnapshot(server?.pid);
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        try {
          const r = await post(port, next());
          if (r.status === 200) requests += 1;
          else errors += 1;
        } catch {
          errors += 1;
        }
      }
    }),
  );
  const answered = performance.now();
  if (settle !== undefined) await settle();
  const ended = performance.now();
  const cpu = cpuPerRequest(cpuBefore, cpuSnapshot(server?.pid), requests);
  const elapsed = (ended - started) / 1000;
  return {
    rps: Math.round((requests / elapsed) * 10) / 10,
    requests,
    errors,
    seconds: Math.round(elapsed * 1000) / 1000,
    ...(settle === undefined ? {} : { settleMs: Math.round(ended - answered) }),
    ...(cpu === undefined ? {} : { cpuMsPerRequest: cpu }),
  };
}

/** `settle`: see closedLoop; the contender's turn lasts until it resolves. */
export type Contender = { port: number; child: ChildProcess; next: () => BenchRequest; settle?: () => Promise<void> };

/**
 * Throughput of a baseline and the app, their closed loops taking turns for `rounds` rounds of
 * `seconds` each (after a one-second warm-up each): both see the same moments of a noisy
 * shared machine, instead of one the first half of a run and the other the second half.
 * The ratio is app over baseline on the totals; each round's own ratio is listed too. A
 * contender's turn lasts until it has settled (Contender.settle): `settleMs` is the longest
 * such wait of its rounds.
 */
export async function alternatingLoops(
  contenders: { baseline: Contender; app: Contender },
  options: { rounds: number; seconds: number; concurrency: number },
): Promise<{ baseline: LoopResult; app: LoopResult; ratio: number; round_ratios: number[] }> {
  type Total = { requests: number; errors: number; seconds: number; settleMs: number[]; cpu: CpuShare[] };
  const fresh = (): Total => ({ requests: 0, errors: 0, seconds: 0, settleMs: [], cpu: [] });
  const totals = { baseline: fresh(), app: fresh() };
  const roundRatios: number[] = [];
  // Warm-up; a contender that settles does so here too, so nothing it left runs in the next turn.
  for (const name of ['baseline', 'app'] as const) {
    const c = contenders[name];
    await closedLoop(c.port, 1, options.concurrency, c.next, undefined, c.settle);
  }
  for (let round = 0; round < options.rounds; round += 1) {
    const rps: Record<string, number> = {};
    for (const name of ['baseline', 'app'] as const) {
      const c = contenders[name];
      const result = await closedLoop(c.port, options.seconds, options.concurrency, c.next, c.child, c.settle);
      totals[name].requests += result.requests;
      totals[name].errors += result.errors;
      totals[name].seconds += result.seconds ?? options.seconds;
      if (result.settleMs !== undefined) totals[name].settleMs.push(result.settleMs);
      if (result.cpuMsPerRequest !== undefined) totals[name].cpu.push({ ...result.cpuMsPerRequest });
      rps[name] = result.rps;
    }
    roundRatios.push(Math.round((rps.app! / rps.baseline!) * 100) / 100);
  }
  const summarise = (name: 'baseline' | 'app'): LoopResult => {
    const t = totals[name];
    const cpu = t.cpu.length === 0 ? undefined : averageCpu(t.cpu);
    const settled = t.settleMs.length === 0 ? {} : { seconds: Math.round(t.seconds * 1000) / 1000, settleMs: Math.max(...t.settleMs) };
    return { rps: Math.round((t.requests / t.seconds) * 10) / 10, requests: t.requests, errors: t.errors, ...settled, ...(cpu === undefined ? {} : { cpuMsPerRequest: cpu }) };
  };
  const baseline = summarise('baseline');
  const app = summarise('app');
  return { baseline, app, ratio: Math.round((app.rps / baseline.rps) * 100) / 100, round_ratios: roundRatios };
}

/** The concurrency levels of a throughput sweep: BENCH_CONCURRENCY, a comma-separated list. */
export function concurrencyLevels(fallback: string): number[] {
  const levels = (process.env.BENCH_CONCURRENCY ?? fallback).split(',').map((v) => Number(v.trim()));
  if (levels.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`BENCH_CONCURRENCY: expected whole numbers, got ${process.env.BENCH_CONCURRENCY}`);
  return levels;
}

export type SweepLevel = { concurrency: number; baseline: LoopResult; app: LoopResult; ratio: number; round_ratios: number[] } & Record<string, unknown>;

/**
 * Throughput is the most a server sustains: alternatingLoops at each concurrency level in
 * turn, then each contender's best level. A server that commits requests in groups needs
 * enough of them in flight to fill its groups; one that does a fixed amount of work per
 * request peaks early and stays flat. So both are compared at their own peaks (`peak.ratio`),
 * and every level's same-concurrency ratio is reported beside it. `afterLevel` adds its
 * findings (group sizes, backlog) to each level.
 */
export async function concurrencySweep(
  contenders: { baseline: Contender; app: Contender },
  options: { levels: readonly number[]; rounds: number; seconds: number },
  afterLevel: (concurrency: number) => Promise<Record<string, unknown>> = async () => ({}),
): Promise<{ levels: SweepLevel[]; peak: { baseline: { rps: number; concurrency: number }; app: { rps: number; concurrency: number }; ratio: number } }> {
  const levels: SweepLevel[] = [];
  for (const concurrency of options.levels) {
    const turns = await alternatingLoops(contenders, { rounds: options.rounds, seconds: options.seconds, concurrency });
    levels.push({ concurrency, ...turns, ...(await afterLevel(concurrency)) });
  }
  const best = (name: 'baseline' | 'app') => levels.reduce((a, b) => (b[name].rps > a[name].rps ? b : a));
  const baseline = { rps: best('baseline').baseline.rps, concurrency: best('baseline').concurrency };
  const app = { rps: best('app').app.rps, concurrency: best('app').concurrency };
  return { levels, peak: { baseline, app, ratio: Math.round((app.rps / baseline.rps) * 100) / 100 } };
}

function averageCpu(shares: readonly CpuShare[]): CpuShare {
  const mean = (key: keyof CpuShare) => Math.round((shares.reduce((sum, s) => sum + s[key], 0) / shares.length) * 1000) / 1000;
  return { server: mean('server'), postgres: mean('postgres'), bench: mean('bench'), total: mean('total') };
}

/** CPU time (ms) spent by the server child, all Postgres processes, and this load generator (Linux /proc). */
type CpuSnapshot = { server: number; postgres: number; bench: number } | undefined;
export type CpuShare = { server: number; postgres: number; bench: number; total: number };

function cpuSnapshot(serverPid: number | undefined): CpuSnapshot {
  const ticks = (stat: string) => {
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime (fields 14 and 15 of /proc/<pid>/stat), in clock ticks of 10 ms.
    return (Number(fields[11]) + Number(fields[12])) * 10;
  };
  try {
    let postgres = 0;
    for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        if (stat.includes('(postgres)')) postgres += ticks(stat);
      } catch {
        /* the process ended meanwhile */
      }
    }
    const server = serverPid === undefined ? 0 : ticks(readFileSync(`/proc/${serverPid}/stat`, 'utf8'));
    const self = process.cpuUsage();
    let loadSide = 0;
    for (const pid of loadSidePids) loadSide += ticks(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    return { server, postgres, bench: (self.user + self.system) / 1000 + loadSide };
  } catch {
    return undefined;
  }
}

function cpuPerRequest(before: CpuSnapshot, after: CpuSnapshot, requests: number): CpuShare | undefined {
  if (before === undefined || after === undefined || requests === 0) return undefined;
  const per = (a: number, b: number) => Math.round(((b - a) / requests) * 1000) / 1000;
  const share = { server: per(before.server, after.server), postgres: per(before.postgres, after.postgres), bench: per(before.bench, after.bench) };
  return { ...share, total: Math.round((share.server + share.postgres + share.bench) * 1000) / 1000 };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! * 100) / 100;
}

/** `rate` requests per second for `seconds`, whatever the answers' speed (open loop). */
export async function openLoop(
  port: number,
  rate: number,
  seconds: number,
  next: () => BenchRequest,
  onSent?: (request: BenchRequest, at: number) => void,
): Promise<{ p50: number; p99: number; max: number; sent: number; errors: number; p99_each_second: number[] }> {
  const latencies: number[] = [];
  const bySecond: number[][] = Array.from({ length: Math.ceil(seconds) }, () => []);
  let errors = 0;
  const total = rate * seconds;
  const start = performance.now();
  const pending: Promise<void>[] = [];
  for (let i = 0; i < total; i += 1) {
    const wait = start + (i * 1000) / rate - performance.now();
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    const r = next();
    onSent?.(r, performance.now());
    const second = bySecond[Math.min(bySecond.length - 1, Math.floor(i / rate))]!;
    pending.push(
      post(port, r).then(
        (answer) => {
          if (answer.status === 200) {
            latencies.push(answer.ms);
            second.push(answer.ms);
          } else errors += 1;
        },
        () => {
          errors += 1;
        },
      ),
    );
  }
  await Promise.all(pending);
  latencies.sort((a, b) => a - b);
  return {
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: Math.round((latencies.at(-1) ?? Number.NaN) * 100) / 100,
    sent: total,
    errors,
    // By the second each request was sent in: a hiccup shows as one bad second.
    p99_each_second: bySecond.map((ms) => percentile(ms.sort((a, b) => a - b), 99)),
  };
}

export function closeAgent(): void {
  agent.destroy();
}

/** Processes on the load side besides this one (the fake Graph API): their CPU counts as the load generator's. */
const loadSidePids = new Set<number>();

/** The system-wide monotonic clock in ms: comparable with the fake Graph API's arrival times. */
export const monotonicMs = (): number => Number(process.hrtime.bigint()) / 1e6;

/**
 * A fake Graph API (bench/graph-server.ts) in a child process, that records when the first
 * reply to each recipient arrives (monotonicMs).
 */
export async function startGraph(): Promise<{ url: string; arrivals(): Promise<Map<string, number>>; clear(): Promise<void>; close(): Promise<void> }> {
  const child = track(spawn(process.execPath, ['--import', 'tsx', 'bench/graph-server.ts'], { stdio: ['ignore', 'pipe', 'inherit'] }));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /READY (\d+)/.exec(out);
      if (match) resolve(Number(match[1]));
    });
    child.once('exit', (code) => reject(new Error(`graph server exited with ${code}`)));
  });
  if (child.pid !== undefined) loadSidePids.add(child.pid);
  return {
    url: `http://127.0.0.1:${port}`,
    async arrivals() {
      const res = await get(port, '/__arrivals');
      return new Map(Object.entries(JSON.parse(res.body) as Record<string, number>));
    },
    async clear() {
      await post(port, { path: '/__clear', body: '' });
    },
    async close() {
      if (child.pid !== undefined) loadSidePids.delete(child.pid);
      await stopServer(child);
    },
  };
}

/**
 * How the app grouped its inbound events of `source` into transactions: rows written by one
 * transaction share its id (xmin), so the count of distinct ones is the count of transactions.
 */
export async function groupCommits(url: string, source: 'whatsapp_message' | 'mpesa_callback'): Promise<{ events: number; transactions: number; mean_size: number }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const { rows } = await client.query<{ events: string; transactions: string }>(
    `select count(*) as events, count(distinct xmin::text) as transactions from inbound_events where source = $1`,
    [source],
  );
  await client.end();
  const events = Number(rows[0]!.events);
  const transactions = Number(rows[0]!.transactions);
  return { events, transactions, mean_size: transactions === 0 ? 0 : Math.round((events / transactions) * 10) / 10 };
}

/**
 * The app's mean group-commit size since the previous call (the first call: since the start),
 * for a benchmark that reads it after each of its load phases.
 */
export function groupCommitsSince(url: string, source: 'whatsapp_message' | 'mpesa_callback'): () => Promise<number> {
  let before = { events: 0, transactions: 0 };
  return async () => {
    const total = await groupCommits(url, source);
    const events = total.events - before.events;
    const transactions = total.transactions - before.transactions;
    before = total;
    return transactions === 0 ? 0 : Math.round((events / transactions) * 10) / 10;
  };
}

/**
 * settle() resolves once the app has no message left to send (none queued or sending),
 * polling every 20 ms: a contender's `settle` (closedLoop), so its turn lasts until the
 * replies or receipts its requests wrote have gone. Throws after 60 s: a backlog that does not
 * drain is a fault, not a figure.
 */
export function outboxDrained(url: string): { settle(): Promise<void>; close(): Promise<void> } {
  const client = new pg.Client({ connectionString: url });
  const connected = client.connect();
  return {
    async settle() {
      await connected;
      const until = performance.now() + 60_000;
      for (;;) {
        const { rows } = await client.query<{ n: number }>(`select count(*)::int as n from outbound_messages where status in ('queued', 'sending')`);
        if (rows[0]!.n === 0) return;
        if (performance.now() > until) throw new Error(`${rows[0]!.n} messages still unsent 60 s after the load stopped`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    async close() {
      await connected;
      await client.end();
    },
  };
}


/**
 * The app's outbox right after a load phase: how many messages each status holds. Replies
 * still queued or sending when the load stops are work the measured rate did not pay for.
 */
export async function outboxState(url: string): Promise<Record<string, number>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const { rows } = await client.query<{ status: string; n: string }>(`select status, count(*) as n from outbound_messages group by status order by status`);
  await client.end();
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
}
