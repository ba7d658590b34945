/**
 * Review of 26e9cf4 / 6be05e9 (src/delivery/outbox.ts): giveBackOvertaking's second rule (a
 * claimed row is given back while a NEWER row to the same person is 'sending' under a live
 * claim, not among the claimed), the settled redispatch rounds, and idle() waiting for parked
 * messages. Tests named "finding" fail on the code reviewed; "pin" tests pass and pin what the
 * review found right.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { sql, type Transaction } from 'kysely';
import { CLAIM_TIMEOUT_SECONDS, createOutbox, type Outbox, type Written } from '../src/delivery/outbox.js';
import type { Database } from '../src/db/schema.js';
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

let next = 0;
const phone = () => `2547055${String((next += 1)).padStart(5, '0')}`;
const texts = (to: string, n: number, from = 0): OutboundDraft[] =>
  Array.from({ length: n }, (_, i) => ({ recipient: to, kind: 'reply', payload: { message: { type: 'text', body: `part ${from + i}` } } }));
const bodies = (to: string) => f.graph.sentTo(to).map((r) => (r.body.text as { body: string }).body);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const db = () => f.database.handle.db;
const enqueue = (drafts: OutboundDraft[]): Promise<string[]> => db().transaction().execute((trx) => f.deps.outbox.enqueue(trx, drafts));
const status = async (id: string) => (await db().selectFrom('outbound_messages').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status;
const smsTo = (to: string) => f.sms.filter((s) => s.to.replace(/^\+/, '') === to.replace(/^\+/, ''));

/** A second process's outbox over the same database (its own in-memory state). */
const otherProcess = (): Outbox =>
  createOutbox({
    db: f.database.handle.db,
    jobs: f.deps.jobs,
    whatsapp: f.deps.whatsapp,
    sms: f.deps.sms,
    config: f.deps.config,
    metrics: f.deps.metrics,
    logger: f.deps.logger,
  });

/**
 * A person with an older message A that was sent on WhatsApp and then reported failed by Meta
 * (fallBackToSms: queued again for SMS), while a newer message B to them is 'sending' under
 * another worker's claim stamped `bStampSql` (fresh, or old: a dead process's). X: another
 * person's message, already sent (what a batch of jobs usually finds). A's own fallback job is
 * removed in the fallback's transaction so that this process's pg-boss worker does not race
 * the deliveries under test.
 */
async function fellBackBehindNewerSending(bStamp: 'fresh' | 'stale'): Promise<{ to: string; a: string; b: string; x: string }> {
  const to = phone();
  const other = phone();
  await f.chatting(to);
  await f.chatting(other);
  const [a, b] = await enqueue(texts(to, 2));
  const [x] = await enqueue(texts(other, 1));
  const first = await f.deps.outbox.deliverMany([a!, x!]);
  assert.equal(first.get(a!), 'sent');
  assert.equal(first.get(x!), 'sent');
  // Another worker claimed B (A was sent) and is sending it.
  await db()
    .updateTable('outbound_messages')
    .set({
      status: 'sending',
      updated_at: bStamp === 'fresh' ? sql`date_trunc('milliseconds', now())` : sql`date_trunc('milliseconds', now()) - make_interval(secs => ${CLAIM_TIMEOUT_SECONDS + 5})`,
    })
    .where('id', '=', b!)
    .execute();
  // Meta reports A failed (status webhook): A falls back to SMS.
  await db()
    .transaction()
    .execute(async (trx) => {
      assert.deepEqual(await f.deps.outbox.fallBackToSms(trx, a!, 'status_failed_131026'), [a!]);
      await sql`delete from pgboss.job where data->>'messageId' = ${a!}`.execute(trx);
    });
  assert.equal(await status(a!), 'queued');
  return { to, a: a!, b: b!, x: x! };
}

// ---------------------------------------------------------------------------------------------
// Rule 1 outside the race it was written for: an SMS fallback of an older message.
// ---------------------------------------------------------------------------------------------

test('finding: the SMS fallback of an older message is answered busy by a batch of jobs while a newer message to the person is being sent elsewhere (a lone job sends it)', async () => {
  const { to, a, x } = await fellBackBehindNewerSending('fresh');
  const smsBefore = smsTo(to).length;
  // pg-boss fetched A's fallback job together with another job whose message is sent already.
  const errors = await f.deps.outbox.job.handleBatch!([
    { data: { messageId: a }, jobId: 'fb-a', retryCount: 0 },
    { data: { messageId: x }, jobId: 'fb-x', retryCount: 0 },
  ]);
  const after = await status(a);
  assert.equal(
    errors[0],
    undefined,
    `A's fallback job failed (${String(errors[0]?.message)}), A is ${after}: giveBackOvertaking's newer-sending rule gave A back because of B (newer, sending); alone, deliver(A) sends it`,
  );
  assert.equal(after, 'sent');
  assert.equal(smsTo(to).length, smsBefore + 1);
});

test('pin: the SMS fallback of an older message, dispatched eagerly in a batch, is given back once but sent by the first timer try (its retry asks for it alone)', async () => {
  const { to, a, x } = await fellBackBehindNewerSending('fresh');
  const smsBefore = smsTo(to).length;
  // Two fallbacks answered in one turn of the event loop: one deliverMany of both.
  f.deps.outbox.dispatchSoon([a, x]);
  try {
    await waitFor(async () => (await status(a)) === 'sent', 3_000, "A's SMS fallback sent by the eager dispatch");
  } catch (error) {
    assert.fail(`${(error as Error).message}: A is ${await status(a)}, given back on every try while B (newer) is sending elsewhere`);
  } finally {
    await f.deps.outbox.idle();
  }
  assert.equal(smsTo(to).length, smsBefore + 1);
});

test('pin: a newer message whose claim belongs to a dead process (older than CLAIM_TIMEOUT_SECONDS) does not hold back the fallback of an older one', async () => {
  const { to, a, x } = await fellBackBehindNewerSending('stale');
  const smsBefore = smsTo(to).length;
  const errors = await f.deps.outbox.job.handleBatch!([
    { data: { messageId: a }, jobId: 'st-a', retryCount: 0 },
    { data: { messageId: x }, jobId: 'st-x', retryCount: 0 },
  ]);
  assert.deepEqual(errors, [undefined, undefined]);
  assert.equal(await status(a), 'sent');
  assert.equal(smsTo(to).length, smsBefore + 1);
});

test('pin: a lone deliver of the fallback is not held back by the newer message being sent (no give-back without a partial claim)', async () => {
  const { to, a } = await fellBackBehindNewerSending('fresh');
  const smsBefore = smsTo(to).length;
  assert.equal(await f.deps.outbox.deliver(a), 'sent');
  assert.equal(smsTo(to).length, smsBefore + 1);
});

// ---------------------------------------------------------------------------------------------
// Overlapping writes (Postgres): the write inserted first and committed last.
// ---------------------------------------------------------------------------------------------

/**
 * Two transactions open at once: `first` inserts first and commits last. `second` is
 * committed and dispatched by `dispatchSecond` (Meta's answers held); once its first send is
 * under way, `first` commits and is dispatched by `dispatchFirst`. Answers what reached Meta
 * 400 ms later (answers still held), and everything in the end.
 */
async function insertedFirstCommittedLast<A, B>(
  to: string,
  write: [(trx: Transaction<Database>) => Promise<A>, (trx: Transaction<Database>) => Promise<B>],
  dispatchSecond: (second: B) => void,
  dispatchFirst: (first: A) => void,
  idle: () => Promise<void>,
): Promise<{ whileHeld: string[]; all: string[] }> {
  const one = await db().startTransaction().execute();
  const two = await db().startTransaction().execute();
  let release: (() => void) | undefined;
  try {
    const first = await write[0](one);
    const second = await write[1](two);
    await two.commit().execute();
    release = f.graph.holdAnswersTo(to);
    dispatchSecond(second);
    await waitFor(() => bodies(to).length >= 1, 5_000, "the second write's first send under way");
    await one.commit().execute();
    dispatchFirst(first);
    await sleep(400);
    const whileHeld = bodies(to);
    release();
    release = undefined;
    await idle();
    await sleep(200);
    await idle();
    return { whileHeld, all: bodies(to) };
  } finally {
    release?.();
    await idle();
    await one.rollback().execute().catch(() => undefined);
    await two.rollback().execute().catch(() => undefined);
  }
}

test('finding, Postgres: two claimed writes to one person in overlapping transactions still go out interleaved when the newer one is being sent by another process (the given-back rows are claimed again 5 ms later)', async (t) => {
  if (f.database.kind !== 'postgres') return t.skip('needs two connections (TEST_DATABASE_URL)');
  const to = phone();
  await f.chatting(to);
  const other = otherProcess();
  const { whileHeld, all } = await insertedFirstCommittedLast<Written, Written>(
    to,
    [(trx) => f.deps.outbox.enqueueClaimed(trx, texts(to, 2, 0)), (trx) => other.enqueueClaimed(trx, texts(to, 2, 2))],
    (second) => other.dispatchWritten(second),
    (first) => f.deps.outbox.dispatchWritten(first),
    async () => {
      await other.idle();
      await f.deps.outbox.idle();
    },
  );
  t.diagnostic(`while 'part 2' was unanswered: ${JSON.stringify(whileHeld)}; in the end: ${JSON.stringify(all)}`);
  assert.deepEqual(whileHeld, ['part 2'], "the first write went out while the other process's write (committed first) was still being sent: interleaved");
  assert.deepEqual(all, ['part 2', 'part 3', 'part 0', 'part 1']);
});

test('pin, Postgres: the same in one process: the first write waits for the other and follows it', async (t) => {
  if (f.database.kind !== 'postgres') return t.skip('needs two connections (TEST_DATABASE_URL)');
  const to = phone();
  await f.chatting(to);
  const { whileHeld, all } = await insertedFirstCommittedLast<Written, Written>(
    to,
    [(trx) => f.deps.outbox.enqueueClaimed(trx, texts(to, 2, 0)), (trx) => f.deps.outbox.enqueueClaimed(trx, texts(to, 2, 2))],
    (second) => f.deps.outbox.dispatchWritten(second),
    (first) => f.deps.outbox.dispatchWritten(first),
    () => f.deps.outbox.idle(),
  );
  assert.deepEqual(whileHeld, ['part 2']);
  assert.deepEqual(all, ['part 2', 'part 3', 'part 0', 'part 1']);
});

test('finding (not a regression; the shape rule 1 was written for), Postgres: a plain write (enqueue) inserted first and committed last goes out interleaved with a claimed write being sent', async (t) => {
  if (f.database.kind !== 'postgres') return t.skip('needs two connections (TEST_DATABASE_URL)');
  const to = phone();
  await f.chatting(to);
  const { whileHeld, all } = await insertedFirstCommittedLast<string[], Written>(
    to,
    [(trx) => f.deps.outbox.enqueue(trx, texts(to, 2, 0)), (trx) => f.deps.outbox.enqueueClaimed(trx, texts(to, 2, 2))],
    (second) => f.deps.outbox.dispatchWritten(second),
    (first) => f.deps.outbox.dispatchSoon(first),
    () => f.deps.outbox.idle(),
  );
  t.diagnostic(`while 'part 2' was unanswered: ${JSON.stringify(whileHeld)}; in the end: ${JSON.stringify(all)}`);
  assert.deepEqual(whileHeld, ['part 2'], 'the chat replies (inserted first, committed last) went out while the receipts were being sent: interleaved');
  assert.deepEqual(all, ['part 2', 'part 3', 'part 0', 'part 1']);
});

// ---------------------------------------------------------------------------------------------
// idle()
// ---------------------------------------------------------------------------------------------

test('pin: idle() resolves (within 10 s) once a send a message is parked behind ends, even when that send ends in a retry and the parked message is then left to its timer tries', async () => {
  const to = phone();
  await f.chatting(to);
  const release = f.graph.holdAnswersTo(to);
  const first = await db().transaction().execute((trx) => f.deps.outbox.enqueueClaimed(trx, texts(to, 1)));
  f.deps.outbox.dispatchWritten(first);
  await waitFor(() => bodies(to).length === 1, 5_000, 'the first send under way');
  const second = await db().transaction().execute((trx) => f.deps.outbox.enqueueClaimed(trx, texts(to, 1, 1)));
  assert.equal(second.claimed.length, 0);
  f.deps.outbox.dispatchWritten(second);
  f.graph.queue({ kind: 'error', status: 503, code: 2, message: 'try later' });
  release();
  const timer = sleep(12_000).then(() => 'timeout' as const);
  const outcome = await Promise.race([f.deps.outbox.idle().then(() => 'idle' as const), timer]);
  assert.equal(outcome, 'idle', 'idle() still waiting after 12 s');
  const sent = bodies(to);
  if (sent.includes('part 1')) assert.ok(sent.indexOf('part 1') > sent.lastIndexOf('part 0') && sent.filter((b) => b === 'part 0').length >= 2, `order: ${JSON.stringify(sent)}`);
});
