/**
 * The outbox delivering many messages at once (src/delivery/outbox.ts deliverMany): each
 * recipient's messages in the order they were written, a claim renewed before a late send and
 * given up when another worker took it over (with the person's later messages waiting for it),
 * a claim racing another worker's claim not overtaking its older message (Postgres), and one
 * broken message failing only its own job. Real database (both kinds), fake Graph API on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sql } from 'kysely';
import pg from 'pg';
import type { OutboundDraft } from '../src/domain/outbound.js';
import { channelSuite, textDrafts, waitFor, type ChannelFixture } from './helpers/channel.js';

let f: ChannelFixture;
channelSuite({ env: { DELIVERY_SAFETY_NET_SECONDS: '3600', WABA_TIMEOUT_MS: '1000' } }, (started) => (f = started));

let next = 500;
const phone = () => `2547022${String((next += 1)).padStart(5, '0')}`;
const texts = textDrafts;
const bodies = (to: string) => f.sentTexts(to);

async function write(drafts: OutboundDraft[]): Promise<string[]> {
  await f.chatting(drafts[0]!.recipient);
  return f.database.handle.db.transaction().execute((trx) => f.deps.outbox.enqueue(trx, drafts));
}

test('messages written together to one person go out in the order written', async () => {
  const to = phone();
  const ids = await write(texts(to, 4));
  f.deps.outbox.dispatchSoon([...ids].reverse());
  await f.deps.outbox.idle();
  assert.deepEqual(bodies(to), ['part 0', 'part 1', 'part 2', 'part 3']);
});

test('the write order counts to the microsecond, whatever order the rows are stored or indexed in', async () => {
  const to = phone();
  await write(texts(to, 1)).then((ids) => f.database.handle.db.deleteFrom('outbound_messages').where('id', 'in', ids).execute());
  // Four messages written within one millisecond (a JS Date cannot tell them apart), stored in
  // the order 2, 0, 3, 1 and with ids that sort 3, 1, 2, 0.
  const ids = ['40000000-0000-4000-8000-000000000000', '20000000-0000-4000-8000-000000000000', '30000000-0000-4000-8000-000000000000', '10000000-0000-4000-8000-000000000000'];
  for (const i of [2, 0, 3, 1]) {
    await sql`insert into outbound_messages (id, recipient, kind, content, created_at)
      values (${ids[i]!}, ${to}, 'reply', ${JSON.stringify({ message: { type: 'text', body: `part ${i}` } })}::jsonb,
              ${'2026-12-01T06:00:00.123Z'}::timestamptz + make_interval(secs => ${(i + 1) / 1_000_000}))`.execute(f.database.handle.db);
  }
  f.deps.outbox.dispatchSoon(ids);
  await f.deps.outbox.idle();
  assert.deepEqual(bodies(to), ['part 0', 'part 1', 'part 2', 'part 3']);
});

test('messages to different people in one dispatch all go out, each once', async () => {
  const people = Array.from({ length: 8 }, phone);
  const ids: string[] = [];
  for (const to of people) ids.push(...(await write(texts(to, 2))));
  f.deps.outbox.dispatchSoon(ids);
  f.deps.outbox.dispatchSoon(ids); // the same ids twice in one turn change nothing
  await f.deps.outbox.idle();
  for (const to of people) assert.deepEqual(bodies(to), ['part 0', 'part 1']);
  const statuses = await f.database.handle.db.selectFrom('outbound_messages').select('status').where('id', 'in', ids).execute();
  assert.ok(statuses.every((s) => s.status === 'sent'));
});

test('a success that cannot be recorded (tried again for a while, test/outbox-record-sent.test.ts) leaves only its own message unrecorded: the rest of the flush is recorded', async () => {
  const bad = phone();
  const good = Array.from({ length: 5 }, phone);
  const ids: string[] = [];
  for (const to of [bad, ...good]) ids.push(...(await write(texts(to, 1))));
  const db = f.database.handle.db;
  // A real failure at record time: the database refuses to mark this one recipient's message sent.
  await sql`create function refuse_sent() returns trigger language plpgsql as $$
    begin
      if new.status = 'sent' and new.recipient = ${sql.lit(bad)} then raise exception 'refused for the test'; end if;
      return new;
    end $$`.execute(db);
  await sql`create trigger refuse_sent before update on outbound_messages for each row execute function refuse_sent()`.execute(db);
  try {
    // All six answers at once: their successes are recorded in one flush. (An outbox that
    // tries a refused record again for half a second, not minutes.)
    const outbox = f.anotherOutbox({ recordSentPatienceMs: 500 });
    const release = f.graph.holdAnswers();
    const sentBefore = f.graph.requests.length;
    const delivered = outbox.deliverMany(ids);
    await f.graph.waitForRequests(sentBefore + 6);
    release();
    await delivered;
  } finally {
    await sql`drop trigger refuse_sent on outbound_messages`.execute(db);
    await sql`drop function refuse_sent()`.execute(db);
  }
  const rows = await db.selectFrom('outbound_messages').select(['recipient', 'status']).where('id', 'in', ids).execute();
  for (const row of rows) assert.equal(row.status, row.recipient === bad ? 'sending' : 'sent', row.recipient);
});

test('Meta answers 200 with a body that does not name the message: recorded sent, never sent again by SMS', async () => {
  const to = phone();
  const [id] = await write(texts(to, 1));
  const smsBefore = f.sms.length;
  f.graph.queue({ kind: 'raw', status: 200, body: 'OK' });
  f.deps.outbox.dispatchSoon([id!]);
  await f.deps.outbox.idle();
  const row = await f.database.handle.db.selectFrom('outbound_messages').select(['status', 'channel', 'provider_message_id', 'fell_back_at']).where('id', '=', id!).executeTakeFirstOrThrow();
  assert.deepEqual(row, { status: 'sent', channel: 'whatsapp', provider_message_id: null, fell_back_at: null });
  assert.equal(f.sms.length, smsBefore, 'no SMS');
  assert.equal(f.graph.sentTo(to).length, 1);
});

test('a retry waits for its time: an earlier job for the same message (the safety net) does not send it ahead of Retry-After', async () => {
  const to = phone();
  const [id] = await write(texts(to, 1));
  f.graph.queue({ kind: 'error', status: 429, code: 130429, message: 'rate limit hit', retryAfter: 120 });
  assert.equal(await f.deps.outbox.deliver(id!), 'retry_scheduled');
  const row = () => f.database.handle.db.selectFrom('outbound_messages').select(['status', 'next_attempt_at']).where('id', '=', id!).executeTakeFirstOrThrow();
  const waiting = await row();
  assert.equal(waiting.status, 'queued');
  assert.ok(waiting.next_attempt_at !== null && waiting.next_attempt_at.getTime() - Date.now() > 100_000, 'due in about two minutes');
  // The safety-net job runs now: the message is not due, so nothing is sent.
  assert.equal(await f.deps.outbox.deliver(id!), 'not_pending');
  assert.equal(f.graph.sentTo(to).length, 1, 'only the first attempt reached Meta');
  // Its time comes (moved forward here): the retry job sends it.
  await f.database.handle.db.updateTable('outbound_messages').set({ next_attempt_at: sql`now() - interval '1 second'` }).where('id', '=', id!).execute();
  assert.equal(await f.deps.outbox.deliver(id!), 'sent');
  assert.equal(f.graph.sentTo(to).length, 2);
});

test("a person's later messages wait while an earlier one waits for a retry, in one delivery and in later ones", async () => {
  const to = phone();
  const [first, second, third] = await write(texts(to, 3));
  const db = f.database.handle.db;
  const statusOf = async (id: string) => (await db.selectFrom('outbound_messages').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status;
  f.graph.queue({ kind: 'error', status: 429, code: 130429, message: 'rate limit hit', retryAfter: 60 });
  const outcomes = await f.deps.outbox.deliverMany([first!, second!, third!]);
  assert.deepEqual([outcomes.get(first!), outcomes.get(second!), outcomes.get(third!)], ['retry_scheduled', 'busy', 'busy']);
  assert.deepEqual(bodies(to), ['part 0'], 'the later two were not sent ahead of the first');
  assert.deepEqual([await statusOf(second!), await statusOf(third!)], ['queued', 'queued'], 'their claims were given back');

  // Their own jobs (or another worker) come meanwhile: still waiting, and told to try again.
  assert.equal(await f.deps.outbox.deliver(second!), 'busy');
  await assert.rejects(f.deps.outbox.job.handle({ messageId: third! }, { logger: f.deps.logger, jobId: 'j-3', retryCount: 0 }), /another worker|waiting/);
  assert.deepEqual(bodies(to), ['part 0']);

  // The first one's time comes: all three go out, in order.
  await db.updateTable('outbound_messages').set({ next_attempt_at: sql`now() - interval '1 second'` }).where('id', '=', first!).execute();
  const later = await f.deps.outbox.deliverMany([third!, second!, first!]);
  assert.deepEqual([later.get(first!), later.get(second!), later.get(third!)], ['sent', 'sent', 'sent']);
  assert.deepEqual(bodies(to), ['part 0', 'part 0', 'part 1', 'part 2']);
});

test('a reply that waits behind one being sent to the same person goes out right after it, not at its job', async () => {
  const to = phone();
  const [d0, d1] = texts(to, 2);
  const [first] = await write([d0!]);
  // PGlite's clock has millisecond resolution and a person's messages are ordered by created_at: 2 ms apart, the second is the later.
  await new Promise((resolve) => setTimeout(resolve, 2));
  const [second] = await write([d1!]);
  const release = f.graph.holdAnswers();
  const sentBefore = f.graph.requests.length;
  f.deps.outbox.dispatchSoon([first!]);
  await f.graph.waitForRequests(sentBefore + 1);
  // The first is in flight (its answer held): the second is dispatched meanwhile and must wait.
  f.deps.outbox.dispatchSoon([second!]);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(f.graph.sentTo(to).length, 1, 'not sent ahead of the first');
  release();
  await f.deps.outbox.idle();
  assert.deepEqual(bodies(to), ['part 0', 'part 1'], 'sent right after (its job is an hour away in this fixture)');
});

test('a later message alone is not sent while an earlier one to the same person is still queued', async () => {
  const to = phone();
  const [first, second] = await write(texts(to, 2));
  assert.equal(await f.deps.outbox.deliver(second!), 'busy');
  assert.deepEqual(bodies(to), []);
  assert.equal(await f.deps.outbox.deliver(first!), 'sent');
  assert.equal(await f.deps.outbox.deliver(second!), 'sent');
  assert.deepEqual(bodies(to), ['part 0', 'part 1']);
});

/** The fixture's outbox, except that every message's claim is renewed before its send (as after 20 s of earlier sends). */
const renewingOutbox = () => f.anotherOutbox({ claimRenewAfterMs: 0 });

test('a claim taken over by another worker during an earlier slow send is not used: that message is not sent twice', async () => {
  const outbox = renewingOutbox();
  const to = phone();
  const [first, second] = await write(texts(to, 2));
  // The first send hangs until the client's timeout; meanwhile "another worker" takes over the
  // second message (a claim of its own, later than ours).
  f.graph.queue({ kind: 'hang' });
  const delivering = outbox.deliverMany([first!, second!]);
  await waitFor(() => f.graph.sentTo(to).length === 1, 5_000, 'the first send to reach Meta');
  await f.database.handle.db.updateTable('outbound_messages').set({ updated_at: sql`now() + interval '1 second'` }).where('id', '=', second!).execute();
  const outcomes = await delivering;
  // The hanging send timed out: its retry job (deliver-message, due in 1-2 s) would resend the first
  // message during a later test and take that test's scripted Graph answer. Not needed here: deleted.
  await f.database.handle.pool.query(`delete from pgboss.job where name = 'deliver-message' and data->>'messageId' = $1`, [first]);
  assert.equal(outcomes.get(second!), 'busy');
  assert.deepEqual(bodies(to), ['part 0'], 'only the hanging first message reached Meta');
  const row = await f.database.handle.db.selectFrom('outbound_messages').select(['status', 'attempts']).where('id', '=', second!).executeTakeFirstOrThrow();
  assert.deepEqual(row, { status: 'sending', attempts: 0 }, 'left to the worker that holds it');
  // With nobody else holding it, a renewed claim is used as usual.
  const to2 = phone();
  const ids = await write(texts(to2, 2));
  const fine = await outbox.deliverMany(ids);
  assert.deepEqual([...fine.values()], ['sent', 'sent']);
  assert.deepEqual(bodies(to2), ['part 0', 'part 1']);
  await outbox.idle();
});

test("a renewed claim that was taken over stops that person's later messages: they do not overtake it", async () => {
  const outbox = renewingOutbox();
  const to = phone();
  const [first, second, third] = await write(texts(to, 3));
  // The first send is slow (Meta's answer held); meanwhile another worker takes the second
  // message over (its claim timed out): a claim of its own, stamped later than ours.
  const release = f.graph.holdAnswers();
  const sentBefore = f.graph.requests.length;
  const delivering = outbox.deliverMany([first!, second!, third!]);
  await f.graph.waitForRequests(sentBefore + 1);
  await f.database.handle.db
    .updateTable('outbound_messages')
    .set({ status: 'sending', updated_at: sql`date_trunc('milliseconds', now()) + interval '1 second'` })
    .where('id', '=', second!)
    .execute();
  release();
  const outcomes = await delivering;
  await outbox.idle();
  assert.deepEqual([outcomes.get(first!), outcomes.get(second!), outcomes.get(third!)], ['sent', 'busy', 'busy'], "the second is the other worker's now; the third waits for it");
  // The other worker has not sent "part 1" yet: "part 2" must wait for it.
  assert.deepEqual(bodies(to), ['part 0'], 'the third message overtook the second (still unsent, held by another worker)');
  const left = await f.database.handle.db.selectFrom('outbound_messages').select('status').where('id', '=', third!).executeTakeFirstOrThrow();
  assert.equal(left.status, 'queued', 'the third claim was given back (its job tries again)');
});

test("per-person order across workers: a claim racing another worker's claim of the older message does not send the newer one first (Postgres only)", async (t) => {
  if (f.database.kind !== 'postgres') {
    t.skip('needs two connections (TEST_DATABASE_URL)');
    return;
  }
  const to = phone();
  const [first, second] = await write(texts(to, 2));
  // Another worker (its own connection) is claiming the first message right now: its claim
  // statement has run, its transaction not committed yet.
  const other = new pg.Client({ connectionString: f.database.url });
  await other.connect();
  try {
    await other.query('begin');
    await other.query(`update outbound_messages set status = 'sending', updated_at = date_trunc('milliseconds', now()) where id = $1`, [first]);
    // This worker claims both (a job batch, the sweep or an eager re-dispatch holding both ids).
    const delivering = f.deps.outbox.deliverMany([first!, second!]);
    await waitFor(async () => {
      const { rows } = await f.database.handle.pool.query(`select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and query like '%outbound_messages%'`);
      return rows[0].n > 0;
    }, 5_000, "the claim to wait on the other worker's lock");
    await other.query('commit');
    const outcomes = await delivering;
    await f.deps.outbox.idle();
    // The other worker holds the first message and has not sent it yet.
    assert.deepEqual(
      [outcomes.get(first!), outcomes.get(second!), bodies(to)],
      ['busy', 'busy', []],
      'the second message went out while the first (older) was still being sent by another worker',
    );
    const rows = await f.database.handle.db.selectFrom('outbound_messages').select(['id', 'status']).where('id', 'in', [first!, second!]).execute();
    assert.deepEqual(new Map(rows.map((r) => [r.id, r.status])), new Map([[first!, 'sending'], [second!, 'queued']]), 'the second was given back, queued for its job');
  } finally {
    await other.end();
  }
  // Once the other worker has sent the first, the second goes.
  await f.database.handle.db.updateTable('outbound_messages').set({ status: 'sent' }).where('id', '=', first!).execute();
  assert.equal(await f.deps.outbox.deliver(second!), 'sent');
  assert.deepEqual(bodies(to), ['part 1']);
});

/**
 * Delivers `id` and, while its send is in flight (Meta's answer held), does what another
 * worker does when it takes over a message whose claim timed out: a claim of its own.
 */
async function deliverTakenOver(id: string): Promise<{ outcome: string; theirs: Date }> {
  const release = f.graph.holdAnswers();
  const sentBefore = f.graph.requests.length;
  const delivering = f.deps.outbox.deliver(id);
  await f.graph.waitForRequests(sentBefore + 1);
  const { updated_at: theirs } = await f.database.handle.db
    .updateTable('outbound_messages')
    .set({ status: 'sending', updated_at: sql`date_trunc('milliseconds', now()) + interval '1 second'` })
    .where('id', '=', id)
    .returning('updated_at')
    .executeTakeFirstOrThrow();
  release();
  return { outcome: await delivering, theirs };
}

const claimsLost = async (step: string) => Number(new RegExp(`invoiceiq_outbound_claims_lost_total\\{step="${step}"\\} (\\d+)`).exec(await f.deps.metrics.registry.metrics())?.[1] ?? 0);

test('a send that succeeds after another worker took the message over is not recorded over that worker (logged and counted: it may have gone twice)', async () => {
  const to = phone();
  const [id] = await write(texts(to, 1));
  const before = await claimsLost('sent');
  const { outcome, theirs } = await deliverTakenOver(id!);
  assert.equal(outcome, 'sent', 'this worker did send it');
  const row = await f.database.handle.db.selectFrom('outbound_messages').select(['status', 'updated_at', 'provider_message_id']).where('id', '=', id!).executeTakeFirstOrThrow();
  assert.deepEqual(row, { status: 'sending', updated_at: theirs, provider_message_id: null }, "left as the other worker's");
  assert.equal(await claimsLost('sent'), before + 1);
});

test('a send that fails after another worker took the message over schedules no retry and no SMS: that worker decides', async () => {
  const to = phone();
  const [id] = await write(texts(to, 1));
  const before = await claimsLost('failure');
  const smsBefore = f.sms.length;
  const jobs = async () => Number((await f.database.handle.pool.query(`select count(*) as n from pgboss.job where name = 'deliver-message' and data->>'messageId' = $1`, [id])).rows[0].n);
  const jobsBefore = await jobs();
  // A final error (not on WhatsApp): on its own claim, this would fall back to SMS at once.
  f.graph.queue({ kind: 'error', status: 400, code: 131026, message: 'Message undeliverable' });
  const { outcome, theirs } = await deliverTakenOver(id!);
  assert.equal(outcome, 'busy');
  const row = await f.database.handle.db.selectFrom('outbound_messages').select(['status', 'updated_at', 'attempts', 'fell_back_at', 'channel']).where('id', '=', id!).executeTakeFirstOrThrow();
  assert.deepEqual(row, { status: 'sending', updated_at: theirs, attempts: 0, fell_back_at: null, channel: null });
  assert.equal(f.sms.length, smsBefore, 'no SMS');
  assert.equal(await jobs(), jobsBefore, 'no retry job');
  assert.equal(await claimsLost('failure'), before + 1);
});

test('in a job batch, a message that cannot be read ends failed (its job done, not retried); the others are delivered', async () => {
  const to = phone();
  const [good] = await write(texts(to, 1));
  const broken = (
    await f.database.handle.db
      .insertInto('outbound_messages')
      .values({ recipient: to, kind: 'reply', content: JSON.stringify({ message: { type: 'carrier-pigeon' } }) })
      .returning('id')
      .executeTakeFirstOrThrow()
  ).id;
  const [other] = await write(texts(phone(), 1));
  const handleBatch = f.deps.outbox.job.handleBatch!;
  const errors = await handleBatch([broken, good!, other!].map((messageId, i) => ({ data: { messageId }, jobId: `job-${i}`, retryCount: 0 })));
  assert.deepEqual(errors, [undefined, undefined, undefined], 'the unreadable message is failed for good: nothing for its job to retry');
  assert.equal((await f.database.handle.db.selectFrom('outbound_messages').select('status').where('id', '=', broken).executeTakeFirstOrThrow()).status, 'failed');
  const statuses = await f.database.handle.db.selectFrom('outbound_messages').select(['id', 'status']).where('id', 'in', [good!, other!]).execute();
  assert.ok(statuses.every((s) => s.status === 'sent'));
  assert.deepEqual(bodies(to), ['part 0']);
});

test("a message whose stored content no longer reads fails for good at once, counted and logged without its content; the person's later messages go out", async () => {
  const to = phone();
  const db = f.database.handle.db;
  // Written by an older version, or edited by hand: OutboundPayload no longer accepts it.
  const secret = 'Secret words 0799 123 456';
  const broken = (
    await db
      .insertInto('outbound_messages')
      .values({ recipient: to, kind: 'reply', content: JSON.stringify({ message: { type: 'text', body: secret }, template: 'no longer a string' }) })
      .returning('id')
      .executeTakeFirstOrThrow()
  ).id;
  const [good] = await write(texts(to, 1));
  const failedCount = async () =>
    (await f.deps.metrics.registry.metrics())
      .split('\n')
      .filter((l) => l.startsWith('invoiceiq_messages_sent_total{') && l.includes('outcome="failed"'))
      .reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
  const failedBefore = await failedCount();
  const logsBefore = f.logs.lines.length;

  const outcomes = await f.deps.outbox.deliverMany([broken, good!]);
  assert.equal(outcomes.get(broken), 'failed');
  assert.equal(outcomes.get(good!), 'sent', 'the later message does not wait behind one that can never go');
  assert.deepEqual(bodies(to), ['part 0']);
  const row = await db.selectFrom('outbound_messages').select(['status', 'last_error']).where('id', '=', broken).executeTakeFirstOrThrow();
  assert.equal(row.status, 'failed');
  assert.match(row.last_error ?? '', /content/);
  assert.ok(!(row.last_error ?? '').includes('Secret') && !(row.last_error ?? '').includes(to.slice(3)), row.last_error ?? '');
  assert.equal(await failedCount(), failedBefore + 1);
  const logged = f.logs.lines.slice(logsBefore).filter((l) => l.message_id === broken);
  assert.ok(logged.some((l) => l.level === 'error'), JSON.stringify(logged));
  const text = JSON.stringify(f.logs.lines.slice(logsBefore));
  assert.ok(!text.includes('Secret') && !text.includes(to.slice(3)), text);
  // Done: no claim left to time out and be taken again.
  assert.equal(await f.deps.outbox.deliver(broken), 'not_pending');
  assert.equal(f.graph.sentTo(to).length, 1);
});

test('the sweep delivers what has been left queued or sending for 30 minutes (its job gone), counts it, and leaves the rest alone', async () => {
  const [stuckTo, freshTo, doneTo] = [phone(), phone(), phone()];
  const [stuckQueued] = await write(texts(stuckTo, 1));
  const [fresh] = await write(texts(freshTo, 1));
  const [done] = await write(texts(doneTo, 1));
  const db = f.database.handle.db;
  // Their jobs are gone (failed after all retries, or deleted by hand).
  await f.database.handle.pool.query(`delete from pgboss.job where name in ('deliver-message', 'deliver-messages') and (data->>'messageId' = any($1) or data->'messageIds' ?| $1::text[])`, [[stuckQueued, fresh, done]]);
  await db.updateTable('outbound_messages').set({ updated_at: sql`now() - interval '31 minutes'` }).where('id', '=', stuckQueued!).execute();
  await db.updateTable('outbound_messages').set({ status: 'sent', updated_at: sql`now() - interval '2 hours'` }).where('id', '=', done!).execute();
  await f.deps.outbox.sweepJob.handle({}, { logger: f.deps.logger, jobId: 'sweep-1', retryCount: 0 });
  assert.deepEqual(bodies(stuckTo), ['part 0']);
  assert.deepEqual(bodies(freshTo), [], 'a message queued a moment ago is its job\'s to send');
  assert.deepEqual(bodies(doneTo), [], 'a sent message is not sent again');
  const metrics = await f.deps.metrics.registry.metrics();
  assert.match(metrics, /invoiceiq_outbound_stuck_messages 1\b/);
  assert.equal((await db.selectFrom('outbound_messages').select('status').where('id', '=', stuckQueued!).executeTakeFirstOrThrow()).status, 'sent');
  // Nothing left: the next sweep finds nothing and says so.
  assert.equal(await f.deps.outbox.sweep(), 0);
  assert.match(await f.deps.metrics.registry.metrics(), /invoiceiq_outbound_stuck_messages 0\b/);
});
