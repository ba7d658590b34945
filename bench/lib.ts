/**
 * Shared pieces of the HTTP benchmarks: fresh migrated Postgres databases, the server child
 * process (bench/webhook-server.ts), and closed/open-loop load generators. Traffic goes to
 * 127.0.0.1 only; every loop is bounded in time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
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

/** Starts bench/webhook-server.ts in `mode` (app or baseline) in a child process. */
export function startServer(mode: 'app' | 'baseline', url: string, graphUrl: string): Promise<{ port: number; child: ChildProcess }> {
  const profile = process.env.BENCH_CPU_PROF === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`];
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', 'bench/webhook-server.ts', mode, url, graphUrl], { stdio: ['ignore', 'pipe', 'inherit'] });
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

export function post(port: number, r: BenchRequest): Promise<{ status: number; ms: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path: r.path, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(r.body), ...r.headers } },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - started }));
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
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

/** Fixed concurrency for `seconds`; counts 200s as done, anything else as errors. */
export async function closedLoop(port: number, seconds: number, concurrency: number, next: () => BenchRequest): Promise<{ rps: number; requests: number; errors: number }> {
  const deadline = performance.now() + seconds * 1000;
  let requests = 0;
  let errors = 0;
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
  return { rps: Math.round((requests / seconds) * 10) / 10, requests, errors };
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
): Promise<{ p50: number; p99: number; max: number; sent: number; errors: number }> {
  const latencies: number[] = [];
  let errors = 0;
  const total = rate * seconds;
  const start = performance.now();
  const pending: Promise<void>[] = [];
  for (let i = 0; i < total; i += 1) {
    const wait = start + (i * 1000) / rate - performance.now();
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    const r = next();
    onSent?.(r, performance.now());
    pending.push(
      post(port, r).then(
        (answer) => {
          if (answer.status === 200) latencies.push(answer.ms);
          else errors += 1;
        },
        () => {
          errors += 1;
        },
      ),
    );
  }
  await Promise.all(pending);
  latencies.sort((a, b) => a - b);
  return { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: Math.round((latencies.at(-1) ?? Number.NaN) * 100) / 100, sent: total, errors };
}

export function closeAgent(): void {
  agent.destroy();
}
