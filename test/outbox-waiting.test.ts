/**
 * Messages that wait for an older message to the same person (src/delivery/outbox.ts
 * sendingTo / waitingFor: parked behind a send this process is running to that person, woken
 * when it ends; otherwise eager retries on a 5..320 ms timer, then once the dispatches in
 * flight have settled). From a review of that change: the tests marked "was a defect" failed
 * on it; the one marked "was a defect (older)" failed before it too. The others pin what the
 * review checked and found right: sends counted per person are all uncounted in the end, so a
 * later message to that person is not parked for ever.
 * Real database (PGlite, or Postgres with TEST_DATABASE_URL), fake Graph API on 127.0.0.1.
 * DELIVERY_SAFETY_NET_SECONDS=3600: a message left to its job is not sent during a test.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { sql } from 'kysely';
import type { Written } from '../src/delivery/outbox.js';
import type { OutboundDraft } from '../src/domain/outbound.js';
import { startChannelFixture, waitFor, type ChannelFixture } from './helpers/channel.js';

let f: ChannelFixture;
before(async () => {
  f = await startChannelFixture({ env: { DELIVERY_SAFETY_NET_SECONDS: '3600', WABA_TIMEOUT_MS: '20000' } });
});
after(() => f.close());
beforeEach(async () => {
  await f.deps.outbox.idle();
  f.graph.reset();
});

let next = 100;
const phone = () => `2547044${String((next += 1)).padStart(5, '0')}`;
const texts = (to: string, n: number, from = 0): OutboundDraft[] =>
  Array.from({ length: n }, (_, i) => ({ recipient: to, kind: 'reply', payload: { message: { type: 'text', body: `part ${from + i}` } } }));
const bodies = (to: string) => f.graph.sentTo(to).map((r) => (r.body.text as { body: string }).body);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const db = () => f.database.handle.db;
const statuses = async (ids: readonly string[]) => {
  const rows = await db().selectFrom('outbound_messages').select(['id', 'status']).where('id', 'in', [...ids]).execute();
  return ids.map((id) => rows.find((r) => r.id === id)?.status);
};
const writeClaimed = (drafts: OutboundDraft[]): Promise<Written> => db().transaction().execute((trx) => f.deps.outbox.enqueueClaimed(trx, drafts));
const enqueue = (drafts: OutboundDraft[]): Promise<string[]> => db().transaction().execute((trx) => f.deps.outbox.enqueue(trx, drafts));

/**
 * Probe of this process's count of sends to `to` (read through behaviour only): a message
 * queued behind another worker's send, which that worker finishes 30 ms later, is sent by the
 * eager path (its timer retries) within a few seconds. Were a send to `to` still counted, the
 * message would be parked for a wake-up that never comes (its job is an hour away).
 */
async function eagerPathStillWorksFor(to: string): Promise<void> {
  const [older] = await enqueue(texts(to, 1, 90));
  await db().updateTable('outbound_messages').set({ status: 'sending', updated_at: sql`date_trunc('milliseconds', now())` }).where('id', '=', older!).execute();
  const newer = await writeClaimed(texts(to, 1, 91));
  assert.equal(newer.claimed.length, 0, 'written queued behind the other worker');
  f.deps.outbox.dispatchWritten(newer);
  await sleep(30);
  await db().updateTable('outbound_messages').set({ status: 'sent' }).where('id', '=', older!).execute();
  await waitFor(async () => (await statuses(newer.ids))[0] === 'sent', 4_000, `the probe message to ${to} sent by the eager path (a send to them still counted?)`);
}

test('parked behind a send that falls back to SMS (nested deliver), the next message goes after the SMS, and nothing is left counted', async () => {
  const to = phone();
  await f.chatting(to);
  const smsBefore = f.sms.length;
  const release = f.graph.holdAnswersTo(to);
  const first = await writeClaimed(texts(to, 1));
  f.deps.outbox.dispatchWritten(first);
  await waitFor(() => bodies(to).length === 1, 5_000, 'the first send under way');
  const second = await writeClaimed(texts(to, 1, 1));
  assert.equal(second.claimed.length, 0);
  f.deps.outbox.dispatchWritten(second);
  // A final WhatsApp error: the first falls back to SMS, sent at once (nested deliver).
  f.graph.queue({ kind: 'error', status: 400, code: 131026, message: 'undeliverable' });
  release();
  await waitFor(async () => (await statuses(second.ids))[0] === 'sent', 5_000, 'the second sent after the first fell back');
  assert.equal(f.sms.length, smsBefore + 1, 'the first went by SMS');
  assert.deepEqual(bodies(to), ['part 0', 'part 1']);
  await f.deps.outbox.idle();
  await eagerPathStillWorksFor(to);
});

test('the same Written dispatched twice while its queued message is parked: sent once each, in order, nothing left counted', async () => {
  const to = phone();
  await f.chatting(to);
  const release = f.graph.holdAnswersTo(to);
  const first = await writeClaimed(texts(to, 2));
  f.deps.outbox.dispatchWritten(first);
  f.deps.outbox.dispatchWritten(first);
  await waitFor(() => bodies(to).length === 1, 5_000, 'the first send under way');
  const second = await writeClaimed(texts(to, 1, 2));
  f.deps.outbox.dispatchWritten(second);
  f.deps.outbox.dispatchWritten(second);
  await sleep(100);
  release();
  await waitFor(async () => (await statuses(second.ids))[0] === 'sent', 5_000, 'the second write sent');
  await f.deps.outbox.idle();
  assert.deepEqual(bodies(to), ['part 0', 'part 1', 'part 2']);
  await eagerPathStillWorksFor(to);
});

test("was a defect: idle() resolved while a message was still parked behind a job's send, and that message went out after idle()", async () => {
  const to = phone();
  await f.chatting(to);
  const release = f.graph.holdAnswersTo(to);
  const ids = await enqueue(texts(to, 1));
  // The write's safety-net job runs (this process's pg-boss worker): its send is held.
  const job = f.deps.outbox.writeJob.handle({ messageIds: ids }, { logger: f.deps.logger, jobId: 'review-job', retryCount: 0 });
  try {
    await waitFor(() => bodies(to).length === 1, 5_000, "the job's send under way");
    const newer = await writeClaimed(texts(to, 1, 1));
    assert.equal(newer.claimed.length, 0);
    f.deps.outbox.dispatchWritten(newer);
  } finally {
    release();
  }
  // Nothing of the outbox's own is in flight now: only the parked message, woken when the job's send ends.
  await f.deps.outbox.idle();
  const atIdle = bodies(to);
  await job;
  await sleep(500);
  await f.deps.outbox.idle();
  assert.deepEqual(atIdle, ['part 0', 'part 1'], 'idle() waits for the parked message to go');
  assert.deepEqual(bodies(to), atIdle, 'nothing sent after idle()');
});

test('was a defect, Postgres: a message waiting behind an older one whose dispatch by this process is in flight, its claim statement slow (a row lock held 1.5 s), is sent once the older has gone, not left to its job', async (t) => {
  if (f.database.kind !== 'postgres') return t.skip('needs two connections (TEST_DATABASE_URL)');
  const to = phone();
  await f.chatting(to);
  const [older] = await enqueue(texts(to, 1));
  // Another transaction holds the older row's lock (as a slow statement on it would): this
  // process's claim of it waits.
  const locker = await db().startTransaction().execute();
  try {
    await locker.selectFrom('outbound_messages').select('id').where('id', '=', older!).forUpdate().execute();
    f.deps.outbox.dispatchSoon([older!]);
    await sleep(50);
    const newer = await writeClaimed(texts(to, 1, 1));
    assert.equal(newer.claimed.length, 0, 'written queued behind the older');
    f.deps.outbox.dispatchWritten(newer);
    await sleep(1_500);
  } finally {
    await locker.commit().execute();
  }
  await f.deps.outbox.idle();
  assert.deepEqual(bodies(to).slice(0, 1), ['part 0']);
  assert.deepEqual(bodies(to), ['part 0', 'part 1'], 'the newer was given up after 635 ms of timer retries while the older (this process\'s own dispatch) was still claiming; only its job (an hour away here) sends it now');
});

test('was a defect (older), Postgres: two claimed writes to one person in overlapping transactions, the one that inserted first committing last, went out at the same time (interleaved); now one after the other, in commit order', async (t) => {
  if (f.database.kind !== 'postgres') return t.skip('needs two connections (TEST_DATABASE_URL)');
  const to = phone();
  await f.chatting(to);
  const one = await db().startTransaction().execute();
  const two = await db().startTransaction().execute();
  let release: (() => void) | undefined;
  try {
    // Written first (older created_at), committed last.
    const first = await f.deps.outbox.enqueueClaimed(one, texts(to, 2, 0));
    const second = await f.deps.outbox.enqueueClaimed(two, texts(to, 2, 2));
    assert.equal(first.claimed.length + second.claimed.length, 4, 'each claimed on its own snapshot');
    await two.commit().execute();
    release = f.graph.holdAnswers();
    f.deps.outbox.dispatchWritten(second);
    await waitFor(() => bodies(to).length >= 1, 5_000, "the second write's first send under way");
    await one.commit().execute();
    f.deps.outbox.dispatchWritten(first);
    await sleep(400);
    assert.deepEqual(bodies(to), ['part 2'], "a second send to the person started while 'part 2' was unanswered: the two writes go out at once, interleaved");
    release();
    await f.deps.outbox.idle();
    assert.deepEqual(bodies(to), ['part 2', 'part 3', 'part 0', 'part 1'], 'the write committed first, then the other');
  } finally {
    release?.();
    await f.deps.outbox.idle();
    await one.rollback().execute().catch(() => undefined);
    await two.rollback().execute().catch(() => undefined);
    t.diagnostic(`sent: ${JSON.stringify(bodies(to))}`);
  }
});
