/**
 * Cold start benchmark (issue 2): process spawn -> first 200 from /readyz.
 *   npm run build && npm run bench:startup
 * Measures the production entry point (dist/src/main.js) on Postgres (BENCH_DATABASE_URL,
 * default postgres://postgres@127.0.0.1:5432/postgres; a fresh database is created and
 * migrated first) and on an existing embedded database (a data dir created by a first,
 * unmeasured start), plus `npm start`'s tsx entry for reference, and a bare node:http
 * server as the baseline for the machine's own process start cost. Median of RUNS runs.
 * Writes bench/results/startup.json. Only 127.0.0.1 is contacted; every run is bounded.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { APP_NODE_FLAGS } from './lib.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
let nextPort = 18_400;

async function timeToReady(args: string[], env: Record<string, string | undefined>, path = '/readyz'): Promise<number> {
  const port = (nextPort += 1);
  const started = performance.now();
  const child = spawn(process.execPath, args, { env: { ...env, PORT: String(port), LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    const deadline = started + 30_000;
    while (performance.now() < deadline) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}${path}`);
        if (res.status === 200) return performance.now() - started;
      } catch {
        /* not listening yet */
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    throw new Error(`no 200 from ${args.join(' ')} within 30 s`);
  } finally {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return Math.round(sorted[Math.floor(sorted.length / 2)]! * 10) / 10;
}

async function series(label: string, args: string[], env: Record<string, string | undefined>, path?: string) {
  const runs: number[] = [];
  for (let i = 0; i < RUNS; i += 1) runs.push(await timeToReady(args, env, path));
  process.stdout.write(`${label}: median ${median(runs)} ms (${runs.map((r) => Math.round(r)).join(', ')})\n`);
  return { median_ms: median(runs), runs_ms: runs.map((r) => Math.round(r)) };
}

async function main(): Promise<void> {
  if (!existsSync('dist/src/main.js')) throw new Error('run `npm run build` first');
  const base = { PATH: process.env.PATH, HOME: process.env.HOME, APP_ENV: 'development' };

  const name = `invoiceiq_bench_start_${Date.now()}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`create database "${name}"`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const dataDir = mkdtempSync(join(tmpdir(), 'invoiceiq-bench-'));
  const bareServer = "require('node:http').createServer((q,s)=>s.end('ok')).listen(process.env.PORT,'127.0.0.1')";
  try {
    // Unmeasured first starts: migrate the Postgres database and create the embedded one.
    await timeToReady([...APP_NODE_FLAGS, 'dist/src/main.js'], { ...base, DATABASE_URL: url.toString() });
    await timeToReady([...APP_NODE_FLAGS, 'dist/src/main.js'], { ...base, DATA_DIR: dataDir });

    const results = {
      date: new Date().toISOString(),
      node: process.version,
      runs: RUNS,
      baseline_bare_node_http: await series('baseline (bare node:http server)', ['-e', bareServer], base, '/'),
      // A deployment (Postgres, provider accounts configured) never runs the simulator.
      postgres: await series('postgres (dist)', [...APP_NODE_FLAGS, 'dist/src/main.js'], { ...base, DATABASE_URL: url.toString(), SIMULATOR: 'off' }),
      postgres_simulator: await series('postgres, simulator mode (dist)', [...APP_NODE_FLAGS, 'dist/src/main.js'], { ...base, DATABASE_URL: url.toString() }),
      // `npm start` with no accounts: simulator mode on the embedded database.
      embedded_existing: await series('embedded, existing data dir, simulator mode (dist)', [...APP_NODE_FLAGS, 'dist/src/main.js'], { ...base, DATA_DIR: dataDir }),
      embedded_existing_no_simulator: await series('embedded, existing data dir, SIMULATOR=off (dist)', [...APP_NODE_FLAGS, 'dist/src/main.js'], { ...base, DATA_DIR: dataDir, SIMULATOR: 'off' }),
      embedded_existing_tsx: await series('embedded, existing data dir (npm start / tsx)', [...APP_NODE_FLAGS, '--import', 'tsx', 'src/main.ts'], { ...base, DATA_DIR: dataDir }),
      goals: { postgres_ms: 1000, embedded_existing_ms: 2000 },
    };
    mkdirSync('bench/results', { recursive: true });
    writeFileSync('bench/results/startup.json', `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write(`ratios to the bare node baseline: postgres ${(results.postgres.median_ms / results.baseline_bare_node_http.median_ms).toFixed(1)}x, embedded ${(results.embedded_existing.median_ms / results.baseline_bare_node_http.median_ms).toFixed(1)}x\n`);
  } finally {
    await admin.query(`drop database if exists "${name}" with (force)`);
    await admin.end();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
