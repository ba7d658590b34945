/**
 * From a review of the "written claimed" change (src/delivery/outbox.ts enqueueClaimed /
 * dispatchWritten, one safety-net job per write, src/providers/http.ts preparedJsonPost). Each
 * test marked "was a defect" failed on that change: a person's messages sent out of order when
 * two writes overlapped (Postgres), write jobs that the previous release would drop during a
 * rolling deploy, and interceptors skipped. The others pin behaviour worth keeping.
 * Real database (both kinds; the concurrency tests need Postgres), fake Graph API on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { sql } from 'kysely';
import { z } from 'zod';
import { createOutbox } from '../src/delivery/outbox.js';
import type { OutboundDraft } from '../src/domain/outbound.js';
import { createProviderHttp } from '../src/providers/http.js';
import { createWhatsAppClient } from '../src/providers/whatsapp/client.js';
import { startChannelFixture, waitFor, type ChannelFixture } from './helpers/channel.js';

let f: ChannelFixture;
before(async () => {
  f = await startChannelFixture({ env: { DELIVERY_SAFETY_NET_SECONDS: '3600', WABA_TIMEOUT_MS: '5000' } });
});
after(() => f.close());
beforeEach(async () => {
  await f.deps.outbox.idle();
  f.graph.reset();
});

let next = 900;
const phone = () => `2547044${String((next += 1)).padStart(5, '0')}`;
const texts = (to: string, n: number, from = 0): OutboundDraft[] =>
  Array.from({ length: n }, (_, i) => ({ recipient: to, kind: 'reply', payload: { message: { type: 'text', body: `part ${from + i}` } } }));
const bodies = (to: string) => f.graph.sentTo(to).map((r) => (r.body.text as { body: string }).body);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function contact(to: string): Promise<void> {
  await sql`insert into conversations (phone, state, last_inbound_at) values (${to}, '{"version":0}'::jsonb, now()) on conflict do nothing`.execute(f.database.handle.db);
}

/**
 * What reached Meta for `to` while Meta's answers were held: dispatches, then waits for the
 * first request and a while longer (a second request, if any, has time to arrive), then lets
 * every answer go and waits for the dispatches to end.
 */
async function sentWhileFirstUnanswered(to: string, dispatch: () => void): Promise<string[]> {
  const release = f.graph.holdAnswers();
  try {
    dispatch();
    await waitFor(() => f.graph.sentTo(to).length >= 1, 5_000, 'the first send to reach Meta');
    await sleep(400);
    return bodies(to);
  } finally {
    release();
    await f.deps.outbox.idle();
  }
}

// ---------------------------------------------------------------------------------------------
// Per-person order between writes claimed by concurrent transactions (Postgres).
// ---------------------------------------------------------------------------------------------

test('was a defect: two payment writes claimed in concurrent transactions to one person: the newer waits while the older, committed first, is being sent (Postgres)', async (t) => {
  if (f.database.kind !== 'postgres') {
    t.skip('needs two connections (TEST_DATABASE_URL)');
    return;
  }
  const to = phone();
  await contact(to);
  const db = f.database.handle.db;
  // Two callback groups (or a callback group and a reconciliation) for the same merchant, at once.
  const first = await db.startTransaction().execute();
  const second = await db.startTransaction().execute();
  try {
    const older = await f.deps.outbox.enqueueClaimed(first, texts(to, 1, 0));
    const newer = await f.deps.outbox.enqueueClaimed(second, texts(to, 1, 1));
    // The older write commits first, as the old path needed to keep the order.
    await first.commit().execute();
    await second.commit().execute();
    const seen = await sentWhileFirstUnanswered(to, () => {
      f.deps.outbox.dispatchWritten(older);
      f.deps.outbox.dispatchWritten(newer);
    });
    assert.deepEqual(seen, ['part 0'], "'part 1' went out while 'part 0' (written and committed first) was still unsent: both were written already claimed");
  } finally {
    await first.rollback().execute().catch(() => undefined);
    await second.rollback().execute().catch(() => undefined);
  }
  assert.deepEqual([...bodies(to)].sort(), ['part 0', 'part 1']);
});

test('was a defect: a chat reply written and committed before a payment notice to the same person is not overtaken by it when the two transactions overlap (Postgres)', async (t) => {
  if (f.database.kind !== 'postgres') {
    t.skip('needs two connections (TEST_DATABASE_URL)');
    return;
  }
  const to = phone();
  await contact(to);
  const db = f.database.handle.db;
  const chat = await db.startTransaction().execute();
  const payment = await db.startTransaction().execute();
  try {
    // The chat reply is written first (older), the payment notice while it is uncommitted.
    const [reply] = await f.deps.outbox.enqueue(chat, texts(to, 1, 0));
    const notice = await f.deps.outbox.enqueueClaimed(payment, texts(to, 1, 1));
    // The chat transaction commits first; then the payment's.
    await chat.commit().execute();
    await payment.commit().execute();
    const seen = await sentWhileFirstUnanswered(to, () => {
      f.deps.outbox.dispatchSoon([reply!]);
      f.deps.outbox.dispatchWritten(notice);
    });
    // Before the change the notice was claimed after its commit, when the reply (older, committed) was visible: it waited.
    assert.deepEqual(seen, ['part 0'], 'the payment notice went out while the older chat reply was still unsent');
  } finally {
    await chat.rollback().execute().catch(() => undefined);
    await payment.rollback().execute().catch(() => undefined);
  }
});

// ---------------------------------------------------------------------------------------------
// Job data the release before can read (rolling deploys, rollback).
// ---------------------------------------------------------------------------------------------

/** deliver-message's job schema in the previous release (51c1ff9, src/delivery/outbox.ts). */
const PreviousReleaseJobData = z.object({ messageId: z.uuid() });

test("was a defect: a write's safety-net job goes to a queue of its own (deliver-messages); what goes to deliver-message the previous release still reads (fly.toml deploys rolling)", async () => {
  const to = phone();
  await contact(to);
  const ids = await f.database.handle.db.transaction().execute((trx) => f.deps.outbox.enqueue(trx, texts(to, 2)));
  const { rows: writeJobs } = await f.database.handle.pool.query<{ name: string }>(
    `select name from pgboss.job where data->'messageIds' ?| $1::text[]`,
    [ids],
  );
  assert.deepEqual(writeJobs.map((r) => r.name), ['deliver-messages']);
  // A retry (its own job on deliver-message) is in the previous release's format.
  f.graph.queue({ kind: 'error', status: 503, code: 2 });
  assert.equal(await f.deps.outbox.deliver(ids[0]!), 'retry_scheduled');
  const { rows } = await f.database.handle.pool.query<{ data: unknown }>(
    `select data from pgboss.job where name = 'deliver-message' and data->>'messageId' = any($1)`,
    [ids],
  );
  assert.equal(rows.length, 1);
  // src/jobs/queue.ts (unchanged): data that fails the schema is logged and the job completes.
  for (const { data } of rows) {
    assert.ok(PreviousReleaseJobData.safeParse(data).success, `a machine still on the previous release would drop ${JSON.stringify(data)} (completed, its messages left to the 30-minute sweep)`);
  }
});

// ---------------------------------------------------------------------------------------------
// preparedJsonPost and what http.post would run (interceptors).
// ---------------------------------------------------------------------------------------------

test('was a defect (latent): the WhatsApp client given an instance with a request interceptor runs it, as http.post does', async () => {
  const http = createProviderHttp();
  http.interceptors.request.use((config) => {
    config.headers.set('X-Trace-Id', 'trace-1');
    return config;
  });
  const client = createWhatsAppClient({ baseUrl: f.graph.baseUrl, apiVersion: 'v21.0', phoneId: '1', token: 't', timeoutMs: 2_000 }, http);
  const to = phone();
  const before = f.graph.requests.length;
  await http.post(`${f.graph.baseUrl}/v21.0/1/messages`, { to, text: { body: 'via post' } });
  await client.send(to, { type: 'text', body: 'via client' });
  const [viaPost, viaClient] = f.graph.requests.slice(before);
  assert.equal(viaPost?.headers['x-trace-id'], 'trace-1');
  assert.equal(viaClient?.headers['x-trace-id'], 'trace-1', 'the interceptor was skipped by preparedJsonPost');
});

// ---------------------------------------------------------------------------------------------
// PINS
// ---------------------------------------------------------------------------------------------

test('jobs of one message ({messageId}) and write jobs ({messageIds}) are delivered, each kind in one batch', async () => {
  const [a, b] = [phone(), phone()];
  await contact(a);
  await contact(b);
  const [old] = await f.database.handle.db.transaction().execute((trx) => f.deps.outbox.enqueue(trx, texts(a, 1)));
  const ids = await f.database.handle.db.transaction().execute((trx) => f.deps.outbox.enqueue(trx, texts(b, 2)));
  assert.deepEqual(await f.deps.outbox.job.handleBatch!([{ data: f.deps.outbox.job.schema.parse({ messageId: old }), jobId: 'old', retryCount: 0 }]), [undefined]);
  assert.deepEqual(await f.deps.outbox.writeJob.handleBatch!([{ data: f.deps.outbox.writeJob.schema.parse({ messageIds: ids }), jobId: 'new', retryCount: 0 }]), [undefined]);
  assert.deepEqual(bodies(a), ['part 0']);
  assert.deepEqual(bodies(b), ['part 0', 'part 1']);
});

test("a written-claimed message whose claim was taken over before its late send is not sent, and the person's later one waits (renewal uses the write's stamp)", async () => {
  // Every claim is renewed before its send, as after CLAIM_RENEW_AFTER_MS of earlier sends.
  const outbox = createOutbox({
    db: f.database.handle.db,
    jobs: f.deps.jobs,
    whatsapp: f.deps.whatsapp,
    sms: f.deps.sms,
    config: f.deps.config,
    metrics: f.deps.metrics,
    logger: f.deps.logger,
    claimRenewAfterMs: 0,
  });
  const to = phone();
  await contact(to);
  const written = await f.database.handle.db.transaction().execute((trx) => outbox.enqueueClaimed(trx, texts(to, 3)));
  assert.equal(written.claimed.length, 3);
  const release = f.graph.holdAnswers();
  const sentBefore = f.graph.requests.length;
  outbox.dispatchWritten(written);
  await f.graph.waitForRequests(sentBefore + 1);
  // Another worker takes the second over (its claim timed out): a stamp of its own.
  await f.database.handle.db
    .updateTable('outbound_messages')
    .set({ updated_at: sql`date_trunc('milliseconds', now()) + interval '1 second'` })
    .where('id', '=', written.ids[1]!)
    .execute();
  release();
  await outbox.idle();
  assert.deepEqual(bodies(to), ['part 0']);
  const rows = await f.database.handle.db.selectFrom('outbound_messages').select(['id', 'status']).where('id', 'in', [...written.ids]).execute();
  assert.deepEqual(
    written.ids.map((id) => rows.find((r) => r.id === id)?.status),
    ['sent', 'sending', 'queued'],
  );
});
