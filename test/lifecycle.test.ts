import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { loadConfig } from '../src/config.js';
import { startService } from '../src/service.js';
import { captureLogs } from './helpers/app.js';

const projectRoot = fileURLToPath(new URL('..', import.meta.url));
const tempDirs: string[] = [];

after(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function tempDataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'invoiceiq-lifecycle-'));
  tempDirs.push(dir);
  return dir;
}

type JsonLine = Record<string, unknown> & { message?: string; level?: string };

type RunningProcess = {
  child: ChildProcessWithoutNullStreams;
  lines: JsonLine[];
  stderr(): string;
  /** Resolves with the first line matching, or rejects when the process exits or time runs out. */
  waitForLine(predicate: (line: JsonLine) => boolean, timeoutMs: number): Promise<JsonLine>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
};

function startProcess(dataDir: string): RunningProcess {
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: '0', HOST: '127.0.0.1', DATA_DIR: dataDir, LOG_LEVEL: 'info', LOG_FORMAT: 'json' };
  delete env.DATABASE_URL;
  delete env.TEST_DATABASE_URL;
  delete env.APP_ENV;
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: projectRoot, env, stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: JsonLine[] = [];
  const waiters: { predicate: (line: JsonLine) => boolean; resolve: (line: JsonLine) => void }[] = [];
  let buffered = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    let newline = buffered.indexOf('\n');
    while (newline !== -1) {
      const text = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      newline = buffered.indexOf('\n');
      if (text.trim() === '') continue;
      let line: JsonLine;
      try {
        line = JSON.parse(text) as JsonLine;
      } catch {
        assert.fail(`stdout line is not JSON: ${text}`);
      }
      lines.push(line);
      for (const waiter of [...waiters]) {
        if (waiter.predicate(line)) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(line);
        }
      }
    }
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    lines,
    stderr: () => stderr,
    exited,
    waitForLine(predicate, timeoutMs) {
      const already = lines.find(predicate);
      if (already !== undefined) return Promise.resolve(already);
      return new Promise<JsonLine>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching line within ${timeoutMs} ms; stderr:\n${stderr}`)), timeoutMs);
        waiters.push({
          predicate,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
        void exited.then(({ code, signal }) => {
          clearTimeout(timer);
          reject(new Error(`exited (${code ?? signal}) before the line; stderr:\n${stderr}`));
        });
      });
    },
  };
}

async function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function stopsCleanlyOn(signal: 'SIGTERM' | 'SIGINT', dataDir: string): Promise<number> {
  const service = startProcess(dataDir);
  try {
    // First start on a fresh directory creates the database and migrates it: allow for it.
    const listening = await service.waitForLine((line) => typeof line.message === 'string' && line.message.startsWith('InvoiceIQ listening'), 90_000);
    const port = listening.port;
    assert.equal(typeof port, 'number');
    assert.ok((port as number) > 0, 'PORT=0 picks a free port and logs it');
    assert.equal(listening.level, 'info');
    assert.match(String(listening.timestamp), /^\d{4}-\d{2}-\d{2}T/);
    assert.ok(existsSync(join(dataDir, 'invoiceiq.lock')), 'the embedded database is locked while running');

    const ready = await fetch(`http://127.0.0.1:${String(port)}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ready', database: 'connected' });

    const signalledAt = performance.now();
    assert.ok(service.child.kill(signal));
    const { code } = await withDeadline(service.exited, 10_000, `exit after ${signal}`);
    const shutdownMs = performance.now() - signalledAt;
    assert.ok(shutdownMs < 10_000);
    assert.equal(code, 0, `exit code after ${signal}; stderr:\n${service.stderr()}`);
    const messages = service.lines.map((line) => line.message);
    assert.ok(messages.includes('shutting down'), JSON.stringify(messages));
    assert.ok(messages.includes('InvoiceIQ stopped'), JSON.stringify(messages));
    assert.equal(service.lines.find((line) => line.message === 'shutting down')?.signal, signal);
    assert.ok(!service.lines.some((line) => line.level === 'error' || line.level === 'fatal'), JSON.stringify(service.lines));
    assert.ok(!existsSync(join(dataDir, 'invoiceiq.lock')), 'the lock file is gone after exit');
    await assert.rejects(fetch(`http://127.0.0.1:${String(port)}/healthz`), 'nothing listens any more');
    return shutdownMs;
  } finally {
    if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill('SIGKILL');
  }
}

test('SIGTERM: the service starts on the embedded database, is ready, and exits 0 within 10 s', async (t) => {
  t.diagnostic(`exited ${await stopsCleanlyOn('SIGTERM', tempDataDir())} ms after SIGTERM`);
});

test('SIGINT does the same, and a restart on the same DATA_DIR works', async (t) => {
  const dataDir = tempDataDir();
  t.diagnostic(`exited ${await stopsCleanlyOn('SIGINT', dataDir)} ms after SIGINT`);
  t.diagnostic(`restarted, exited ${await stopsCleanlyOn('SIGTERM', dataDir)} ms after SIGTERM`);
});

/** A GET over a fresh, non-keep-alive connection; resolves when the response is complete. */
function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

test('stop() lets an in-flight request finish, then refuses new connections', async (t) => {
  const dataDir = tempDataDir();
  const logs = captureLogs('info');
  const config = loadConfig({ DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', SHUTDOWN_TIMEOUT_MS: '8000' });
  const service = await startService(config, logs.logger);
  let stopped = false;
  try {
    assert.ok(service.port > 0);
    assert.equal(service.deps.database.kind, 'embedded');
    assert.equal((await get(service.port, '/readyz')).status, 200);

    // The in-flight signal: /readyz calls the database's ping. The wrapper only observes the
    // call; the real ping (and the real database) answers.
    const database = service.deps.database;
    const realPing = database.ping.bind(database);
    let pingEntered = (): void => undefined;
    const entered = new Promise<void>((resolve) => (pingEntered = resolve));
    database.ping = (timeoutMs) => {
      pingEntered();
      return realPing(timeoutMs);
    };

    // Occupy the single PGlite session so /readyz has to wait for it. A keep-alive client
    // (fetch) is used on purpose: its connection must not hold the shutdown open.
    const warm = await fetch(`http://127.0.0.1:${String(service.port)}/healthz`);
    assert.equal(warm.status, 200);
    await warm.text();
    const busy = database.pool.query('select pg_sleep(0.2)');
    const inFlight = fetch(`http://127.0.0.1:${String(service.port)}/readyz`);
    await entered;
    const stopping = service.stop();
    const response = await inFlight;
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { status: 'ready', database: 'connected' });
    assert.equal(response.headers.get('connection'), 'close', 'a response finished while draining closes its connection');
    await busy;
    // Generous: the shutdown deadline is 4 s (SHUTDOWN_TIMEOUT_MS / 2) plus the job queue's 4 s.
    const stopStarted = performance.now();
    await withDeadline(stopping, 10_000, 'stop()');
    stopped = true;
    t.diagnostic(`stop() resolved ${Math.round(performance.now() - stopStarted)} ms after the in-flight response`);

    await assert.rejects(get(service.port, '/healthz'), (error: NodeJS.ErrnoException) => error.code === 'ECONNREFUSED');
    assert.ok(!existsSync(join(dataDir, 'invoiceiq.lock')), 'the database and its lock are closed');
    const messages = logs.lines.map((line) => line.message);
    assert.ok(messages.includes('InvoiceIQ stopped'));
    const completed = logs.lines.filter((line) => line.message === 'request completed' && line.route === '/readyz');
    assert.equal(completed.length, 2);
    assert.ok(!logs.lines.some((line) => line.level === 'error'), logs.text());
    // stop() is idempotent.
    await service.stop();
  } finally {
    if (!stopped) await service.stop();
  }
});

test('with SMS configured but no SMS_INBOUND_TOKEN, the service warns at start that replies to the SMS number are not received', async () => {
  const logs = captureLogs('info');
  const config = loadConfig({ DATA_DIR: tempDataDir(), PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', SMS_API_KEY: 'sms-key', SMS_USERNAME: 'sms-user' });
  const service = await startService(config, logs.logger);
  try {
    const warning = logs.lines.find((line) => line.level === 'warn' && /SMS_INBOUND_TOKEN is not set/.test(line.message));
    assert.ok(warning, logs.text());
    assert.match(warning.message, /\/sms\/inbound\/<token>/);
    // Nor SMS_REPORT_TOKEN: delivery reports are taken at a URL anyone can post to.
    const reports = logs.lines.find((line) => line.level === 'warn' && /SMS_REPORT_TOKEN is not set/.test(line.message));
    assert.ok(reports, logs.text());
    assert.match(reports.message, /\/sms\/delivery-report\/<token>/);
  } finally {
    await service.stop();
  }
});
