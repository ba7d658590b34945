/**
 * The server side of bench/webhook.ts, run as a child process so the load generator does
 * not share its event loop. Modes:
 *   app       the real InvoiceIQ app (signature, zod, exactly-once transaction, outbox, eager reply)
 *   baseline  a bare Hono handler doing one INSERT ... ON CONFLICT DO NOTHING (any POST path);
 *             and, for bench/stats.ts, the summary's best hand-written query served as JSON:
 *             GET /stats-baseline/all?from=&to= (rollups), /stats-baseline/one?from=&to=&merchant=<id>
 * Prints `READY <port>` when listening; exits on SIGTERM.
 */
import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { Hono } from 'hono';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { openDatabase, type DatabaseHandle } from '../src/db/connect.js';
import { createDeps } from '../src/deps.js';
import { createLogger } from '../src/logger.js';
import type { Outbox, Written } from '../src/delivery/outbox.js';
import { overOneMerchant, overRollups } from './stats-queries.js';

const [mode, databaseUrl, graphUrl] = process.argv.slice(2);
if ((mode !== 'app' && mode !== 'baseline') || databaseUrl === undefined) {
  process.stderr.write('usage: webhook-server.ts app|baseline <database-url> [graph-url]\n');
  process.exit(2);
}

/**
 * BENCH_HOLD_WRITES=1 (app mode; bench/callbacks.ts BENCH_RECEIPTS=held): the messages a write
 * leaves to send at once (the receipts of a group of STK callbacks) are written, committed and
 * claimed exactly as in service, but their dispatch is held until POST /__bench/release-held,
 * which hands each held write to the real dispatch in the order written, a few at a time, and
 * answers once all of them have been sent. What the callback path costs is then measured apart
 * from what delivering its receipts costs, and nothing is dropped: the release sends them all.
 */
const holdWrites = process.env.BENCH_HOLD_WRITES === '1';

/** Holds `outbox`'s dispatch of what each write leaves to send; the function returned releases it all. */
function holdDispatch(outbox: Outbox, pool: DatabaseHandle['pool']): () => Promise<number> {
  const dispatch = outbox.dispatchWritten.bind(outbox);
  const held: Written[] = [];
  // Payments calls deps.outbox.dispatchWritten at each commit: replaced on the same object.
  Object.assign(outbox, { dispatchWritten: (written: Written) => void held.push(written) });
  return async () => {
    let released = 0;
    while (held.length > 0) {
      for (const written of held.splice(0, 64)) {
        dispatch(written);
        released += written.claimed.length + written.queued.length;
      }
      await outbox.idle();
    }
    // Rows written queued behind an older unsent message to the same person (a merchant's
    // earlier receipt, held too) that their dispatch could not claim: in service their
    // safety-net job sends them 15 s later (held here for an hour); its path, now.
    for (;;) {
      const { rows } = await pool.query<{ id: string }>(`select id from outbound_messages where status = 'queued' order by created_at, id limit 2000`);
      if (rows.length === 0) return released;
      const outcomes = await outbox.deliverMany(rows.map((row) => row.id));
      if (![...outcomes.values()].some((outcome) => outcome === 'sent')) throw new Error(`held receipts: ${rows.length} queued, none could be sent`);
    }
  };
}

const database = await openDatabase({ kind: 'postgres', url: databaseUrl, poolMax: Number(process.env.BENCH_POOL ?? 10) });
let fetchHandler: (request: Request) => Response | Promise<Response>;
let stopJobs = async () => undefined as void;

if (mode === 'baseline') {
  const app = new Hono();
  // Any POST: one INSERT ... ON CONFLICT DO NOTHING keyed by the event's own id.
  app.post('/*', async (c) => {
    const body = (await c.req.json()) as {
      entry?: Array<{ changes: Array<{ value: { messages: Array<{ id: string }> } }> }>;
      Body?: { stkCallback?: { CheckoutRequestID?: string } };
    };
    const id = body.entry?.[0]?.changes[0]?.value.messages[0]?.id ?? body.Body?.stkCallback?.CheckoutRequestID ?? 'unknown';
    await database.pool.query(
      `insert into inbound_events (source, external_key, payload, status) values ('whatsapp_message', $1, $2, 'processed') on conflict do nothing`,
      [id, JSON.stringify(body)],
    );
    return c.json({ status: 'received' });
  });
  // One query, as a prepared statement (its best way to run), and its row as JSON.
  app.get('/stats-baseline/all', async (c) => {
    const { rows } = await database.pool.query({ name: 'baseline_all', text: overRollups, values: [c.req.query('from'), c.req.query('to')] });
    return c.json(rows[0]);
  });
  app.get('/stats-baseline/one', async (c) => {
    const from = new Date(`${c.req.query('from')}T00:00:00+03:00`);
    const to = new Date(new Date(`${c.req.query('to')}T00:00:00+03:00`).getTime() + 86_400_000);
    const { rows } = await database.pool.query({ name: 'baseline_one', text: overOneMerchant, values: [from, to, c.req.query('merchant')] });
    return c.json(rows[0]);
  });
  fetchHandler = app.fetch;
} else {
  const config = loadConfig({
    APP_ENV: 'development',
    DATABASE_URL: databaseUrl,
    WABA_APP_SECRET: 'bench-secret',
    WABA_TOKEN: 'bench-token',
    WABA_PHONE_ID: '1000',
    WABA_API_BASE_URL: graphUrl ?? 'http://127.0.0.1:9',
    WABA_TEMPLATE_RECEIPT: 'invoice_receipt',
    MPESA_CALLBACK_URL: 'https://bench.invalid/payments/stk/callback',
    STATS_API_TOKEN: 'bench-stats-token-0123456789abcdef0123',
    // The benchmarks measure this service's own work per message; the pace (Meta's throughput
    // per business number, 80 to 1,000 a second) would measure Meta's limit instead.
    WABA_MAX_SENDS_PER_SECOND: '0',
    LOG_LEVEL: 'warn',
    // Held receipts (below): no safety-net job may send them during the measurement either.
    ...(holdWrites ? { DELIVERY_SAFETY_NET_SECONDS: '3600' } : {}),
  });
  const logger = createLogger({ level: 'warn', format: 'json' });
  const deps = createDeps({ config, logger, database });
  await deps.jobs.start(deps.jobDefinitions);
  const releaseHeld = holdWrites ? holdDispatch(deps.outbox, database.pool) : undefined;
  stopJobs = async () => {
    // Safety-net jobs from a load phase may still be running: let them finish before the pool closes.
    await deps.jobs.stop(10_000);
    await deps.outbox.stop();
  };
  const app = createApp(deps);
  if (releaseHeld === undefined) fetchHandler = app.fetch;
  else {
    const outer = new Hono();
    outer.post('/__bench/release-held', async (c) => c.json({ released: await releaseHeld() }));
    outer.route('/', app);
    fetchHandler = outer.fetch;
  }
}

const server = serve({ fetch: fetchHandler, port: 0, hostname: '127.0.0.1' }, (info: AddressInfo) => {
  process.stdout.write(`READY ${info.port}\n`);
});
process.on('SIGTERM', () => {
  server.close(async () => {
    await stopJobs();
    await database.close();
    process.exit(0);
  });
});
