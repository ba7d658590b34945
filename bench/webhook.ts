/**
 * Inbound webhook benchmark (issue 3), against a real Postgres on 127.0.0.1.
 *   npm run bench:webhook            (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres)
 *
 * 1. Throughput: closed loops of signed unique text messages, the real app (every reply
 *    delivered to the fake Graph API) vs a bare Hono handler doing one INSERT ... ON CONFLICT
 *    DO NOTHING, same run, same Postgres, taking turns (BENCH_ROUNDS rounds) so both see the
 *    same moments of the machine, at each concurrency of BENCH_CONCURRENCY (default
 *    32,64,128,256). The app's turn lasts until its replies have gone (none queued or
 *    sending), and its rate counts that time. Throughput is each one's best level (lib.ts
 *    concurrencySweep); each level also reports its own ratio, the app's mean group-commit
 *    size and the longest wait for its replies after a turn (settleMs).
 * 2. Ack latency at a fixed 500 req/s (open loop) for the real app: p50/p99 over
 *    BENCH_ACK_SECONDS (10) after BENCH_WARMUP_SECONDS (20) at the same rate, whose figures
 *    are reported beside them; the p99 of each second too.
 * 3. Reply latency at 100 msg/s: webhook sent -> reply received by a fake Graph API (a child
 *    process, bench/graph-server.ts, like the servers: the load generator's clock is not
 *    delayed by answering replies).
 * Writes bench/results/webhook.json and prints a summary. Traffic goes to 127.0.0.1 only,
 * every phase is bounded in time and the script stops by itself.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { closeAgent, closedLoop, concurrencyLevels, concurrencySweep, freshDatabase, groupCommitsSince, monotonicMs, openLoop, outboxDrained, outboxState, percentile, startGraph, startServer, stopServer, type BenchRequest } from './lib.js';

const SECRET = 'bench-secret';
const THROUGHPUT_SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
/** The throughput phase's concurrency levels (closed-loop clients), each measured in turn. */
const LEVELS = concurrencyLevels('32,64,128,256');
/** Turns each contender takes at each level (BENCH_SECONDS in all, each). */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4);
/**
 * The ack phase's warm-up at its own rate, not measured: past DELIVERY_SAFETY_NET_SECONDS
 * (15), so the measured window includes the safety-net jobs of earlier messages coming due,
 * as in a running service; and past the first seconds of a fresh process on new, unanalysed
 * tables (JIT, Postgres statistics, pg-boss start-up), which are not its steady state.
 */
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 20);
const ACK_SECONDS = Number(process.env.BENCH_ACK_SECONDS ?? 10);
/** Which phases to run (default all): throughput, ack, reply. */
const PHASES = new Set((process.env.BENCH_PHASES ?? 'throughput,ack,reply').split(','));

let seq = 0;
function signedMessage(from?: string): { body: string; signature: string; from: string } {
  seq += 1;
  const phone = from ?? `2547${String(10_000_000 + (seq % 89_999_999)).padStart(8, '0')}`;
  const payload = {
    object: 'whatsapp_business_account',
    entry: [
      {
        id: 'WABA',
        changes: [
          {
            field: 'messages',
            value: {
              messaging_product: 'whatsapp',
              metadata: { display_phone_number: '15550001111', phone_number_id: '1000' },
              contacts: [{ profile: { name: 'Bench' }, wa_id: phone }],
              messages: [{ from: phone, id: `wamid.bench.${process.pid}.${seq}.${randomBytes(4).toString('hex')}`, timestamp: String(Math.floor(Date.now() / 1000)), type: 'text', text: { body: 'hi' } }],
            },
          },
        ],
      },
    ],
  };
  const body = JSON.stringify(payload);
  return { body, signature: `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`, from: phone };
}


function webhookRequest(): BenchRequest & { from: string } {
  const m = signedMessage();
  return { path: '/whatsapp/webhook', body: m.body, headers: { 'x-hub-signature-256': m.signature }, from: m.from };
}


async function main(): Promise<void> {
  const graph = await startGraph();
  const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, concurrency: LEVELS, seconds: THROUGHPUT_SECONDS };

  // 1. Throughput: baseline and app, each on its own fresh database, taking turns.
  if (PHASES.has('throughput')) {
    const baselineDb = await freshDatabase();
    const appDb = await freshDatabase();
    const baseline = await startServer('baseline', baselineDb.url, graph.url);
    const app = await startServer('app', appDb.url, graph.url);
    const meanGroup = groupCommitsSince(appDb.url, 'whatsapp_message');
    // The app's turn lasts until its replies have gone (lib.ts closedLoop: settle).
    const repliesOut = outboxDrained(appDb.url);
    const sweep = await concurrencySweep(
      { baseline: { ...baseline, next: webhookRequest }, app: { ...app, next: webhookRequest, settle: repliesOut.settle } },
      { levels: LEVELS, rounds: ROUNDS, seconds: THROUGHPUT_SECONDS / ROUNDS },
      async () => {
        const replies = await outboxState(appDb.url);
        return { mean_group: await meanGroup(), replies_sent_so_far: replies.sent ?? 0 };
      },
    );
    await repliesOut.close();
    await stopServer(baseline.child);
    await stopServer(app.child);
    await baselineDb.drop();
    await appDb.drop();
    results.throughput = { ...sweep, goal: 'peak ratio >= 0.5' };
  }

  // 2 and 3: the real app, one fresh database.
  const db = await freshDatabase();
  const { port, child } = await startServer('app', db.url, graph.url);
  await closedLoop(port, 1, 8, webhookRequest);
  if (PHASES.has('ack')) {
    const warmup = await openLoop(port, 500, WARMUP_SECONDS, webhookRequest);
    const measured = await openLoop(port, 500, ACK_SECONDS, webhookRequest);
    results.ack_latency_500rps = {
      ...measured,
      warmup: { seconds: WARMUP_SECONDS, p50: warmup.p50, p99: warmup.p99, p99_each_second: warmup.p99_each_second },
      goal: 'p99 < 50 ms',
    };
  }

  if (PHASES.has('reply')) {
    const sentAt = new Map<string, number>();
    await graph.clear();
    const ack = await openLoop(port, 100, 6, webhookRequest, (r) => sentAt.set((r as ReturnType<typeof webhookRequest>).from, monotonicMs()));
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const arrivals = await graph.arrivals();
    const replies = [...sentAt].map(([from, at]) => (arrivals.get(from) ?? Number.NaN) - at).filter(Number.isFinite).sort((a, b) => a - b);
    results.reply_latency_100rps = {
      p50: percentile(replies, 50),
      p99: percentile(replies, 99),
      max: replies.at(-1),
      replies: replies.length,
      sent: sentAt.size,
      ack_p99: ack.p99,
      goal: 'p50 < 30 ms, p99 < 150 ms',
    };
  }
  await stopServer(child);
  await db.drop();
  await graph.close();
  closeAgent();

  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/webhook.json', `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
}

await main();
