/**
 * Group commit of inbound messages (src/inbound/whatsapp.ts runBatch, src/batch.ts): many
 * senders' messages share one transaction, one sender's messages stay in order, a bad message
 * costs the others nothing, and duplicates still have one effect. Real conversation shell,
 * real route, fake Graph API on 127.0.0.1, both databases.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { sql } from 'kysely';
import { createConversationHandler } from '../src/conversation/handler.js';
import type { ConversationHandler } from '../src/conversation/port.js';
import { texts } from '../src/domain/texts.js';
import { envelope, textMessage, wamid } from './fixtures/whatsapp.js';
import { startChannelFixture, waitFor, type ChannelFixture } from './helpers/channel.js';

const real = createConversationHandler();
/** The senders of every batch the conversation was asked to prepare. */
const batches: string[][] = [];
/** For each of those batches: whether the inbound statement brought the facts (no query of the handler's own). */
const preloaded: boolean[] = [];
/** A sender whose turn throws (as a bug in the conversation would). */
let poisoned: string | null = null;
/** A sender whose turn fails once inside a group (as a deadlock would), then works. */
let failOnceInGroup: string | null = null;

const observed: ConversationHandler = Object.assign(
  async (trx: Parameters<ConversationHandler>[0], message: Parameters<ConversationHandler>[1]) => {
    if (message.phone === poisoned) throw new Error('poisoned turn');
    return real(trx, message);
  },
  {
    async prepare(trx: Parameters<ConversationHandler>[0], phones: readonly string[], facts?: Parameters<NonNullable<ConversationHandler['prepare']>>[2]) {
      batches.push([...phones]);
      preloaded.push(facts !== undefined);
      const batch = await real.prepare!(trx, phones, facts);
      return {
        async run(message: Parameters<ConversationHandler>[1]) {
          if (message.phone === poisoned) throw new Error('poisoned turn');
          if (message.phone === failOnceInGroup) {
            failOnceInGroup = null;
            throw new Error('deadlock detected (for the test)');
          }
          return batch.run(message);
        },
        save: () => batch.save(),
        saveStatement: () => batch.saveStatement(),
      };
    },
    factsOf: real.factsOf!,
  },
);

let f: ChannelFixture;
before(async () => {
  f = await startChannelFixture({ conversation: observed, env: { DELIVERY_SAFETY_NET_SECONDS: '3600' } });
});
after(() => f.close());
beforeEach(async () => {
  await f.deps.outbox.idle();
  batches.length = 0;
  preloaded.length = 0;
  poisoned = null;
  failOnceInGroup = null;
  f.graph.reset();
});

let next = 100;
const phone = () => `2547011${String((next += 1)).padStart(5, '0')}`;

async function repliesTo(to: string) {
  const rows = await f.database.handle.db
    .selectFrom('outbound_messages')
    .select(['content', 'status'])
    .where('recipient', '=', to)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  return rows.map((r) => ({ status: r.status, message: (r.content as { message: { body: string } }).message }));
}

async function eventStatus(key: string): Promise<string | undefined> {
  const row = await f.database.handle.db.selectFrom('inbound_events').select('status').where('external_key', '=', key).executeTakeFirst();
  return row?.status;
}

describe('inbound group commit', () => {
  test('one POST with ten senders is one batch: every message processed, one reply each, delivered', async () => {
    const senders = Array.from({ length: 10 }, phone);
    const messages = senders.map((from) => textMessage(from, 'hi'));
    const res = await f.post(envelope({ messages }));
    assert.equal(res.status, 200);
    assert.deepEqual(batches, [senders], 'the ten senders went through the conversation together');
    assert.deepEqual(preloaded, [true], 'their facts came back with the statement that locked their conversations');
    for (const message of messages) assert.equal(await eventStatus(message.id as string), 'processed');
    await f.deps.outbox.idle();
    for (const from of senders) {
      const replies = await repliesTo(from);
      assert.equal(replies.length, 1, `one reply for ${from}`);
      assert.deepEqual(replies[0]!.message, texts.en.askBusinessName());
      assert.equal(replies[0]!.status, 'sent');
      assert.equal(f.graph.sentTo(from).length, 1, `one send to ${from}`);
    }
    const windows = await f.database.handle.db.selectFrom('conversations').select('last_inbound_at').where('phone', 'in', senders).execute();
    assert.equal(windows.length, 10, 'each sender has a conversation with its 24-hour window');
    assert.ok(windows.every((w) => w.last_inbound_at !== null));
  });

  test('concurrent POSTs from different senders are committed in fewer transactions than messages', async () => {
    const senders = Array.from({ length: 24 }, phone);
    const answers = await Promise.all(senders.map((from) => f.post(envelope({ messages: [textMessage(from, 'hi')] }))));
    assert.ok(answers.every((r) => r.status === 200));
    assert.deepEqual(batches.flat().sort(), [...senders].sort(), 'every sender went through exactly one turn');
    assert.ok(batches.length < senders.length, `${batches.length} batches for ${senders.length} messages`);
    await f.deps.outbox.idle();
    for (const from of senders) assert.equal((await repliesTo(from)).length, 1);
  });

  test("one sender's messages go in separate batches, in order: the second turn sees the first", async () => {
    const [a, b] = [phone(), phone()];
    // A first contact is asked for the business name; the next message is that name. Only
    // right in this order (the other way round, "hi" would become the business's name).
    const first = textMessage(a, 'hi');
    const second = textMessage(a, 'Mama Mboga Shop');
    const other = textMessage(b, 'hi');
    assert.equal((await f.post(envelope({ messages: [first, other, second] }))).status, 200);
    assert.equal(batches.length, 2);
    assert.deepEqual(batches[0], [a, b]);
    assert.deepEqual(batches[1], [a]);
    const replies = await repliesTo(a);
    assert.equal(replies.length, 2);
    assert.deepEqual(replies[0]!.message, texts.en.askBusinessName());
    assert.deepEqual(replies[1]!.message, texts.en.registered('Mama Mboga Shop'));
    const merchant = await f.database.handle.db.selectFrom('merchants').select('business_name').where('phone', '=', a).executeTakeFirstOrThrow();
    assert.equal(merchant.business_name, 'Mama Mboga Shop');
  });

  test('a turn that throws costs the rest of its batch nothing: they are applied one by one, it is kept for a retry', async () => {
    const senders = Array.from({ length: 6 }, phone);
    poisoned = senders[2]!;
    const messages = senders.map((from) => textMessage(from, 'hi'));
    assert.equal((await f.post(envelope({ messages }))).status, 200);
    assert.deepEqual(batches[0], senders, 'the poisoned sender shared a batch with the others');
    for (const [i, message] of messages.entries()) {
      assert.equal(await eventStatus(message.id as string), i === 2 ? 'retrying' : 'processed', `message ${i}`);
    }
    const kept = await f.database.handle.db.selectFrom('inbound_events').selectAll().where('external_key', '=', messages[2]!.id as string).executeTakeFirstOrThrow();
    assert.match(kept.last_error ?? '', /poisoned turn/);
    const job = await f.database.handle.pool.query(`select count(*)::int as n from pgboss.job where name = 'retry-inbound-event' and data->>'eventId' = $1`, [kept.id]);
    assert.equal(job.rows[0].n, 1, 'a retry job is queued');
    await f.deps.outbox.idle();
    for (const [i, from] of senders.entries()) assert.equal((await repliesTo(from)).length, i === 2 ? 0 : 1, `replies to sender ${i}`);
    // Once the bug is gone the retry applies it, exactly once.
    poisoned = null;
    assert.equal(await f.deps.inbound.retryEvent(kept.id), 'processed');
    await f.deps.outbox.idle();
    assert.equal((await repliesTo(senders[2]!)).length, 1);
  });

  test('a message whose group of one fails once is applied at once on its own, not queued where the next could overtake it', async () => {
    const a = phone();
    failOnceInGroup = a;
    const first = textMessage(a, 'hi');
    assert.equal((await f.post(envelope({ messages: [first] }))).status, 200);
    assert.equal(await eventStatus(first.id as string), 'processed', 'applied by the second try, not stored for a retry');
    assert.equal((await f.post(envelope({ messages: [textMessage(a, 'Mama Mboga Shop')] }))).status, 200);
    const merchant = await f.database.handle.db.selectFrom('merchants').select('business_name').where('phone', '=', a).executeTakeFirstOrThrow();
    assert.equal(merchant.business_name, 'Mama Mboga Shop', 'the two messages applied in the order sent');
  });

  test('a message that cannot even be stored for a retry fails alone: the rest of its group is applied', async () => {
    const senders = Array.from({ length: 4 }, phone);
    poisoned = senders[0]!;
    const messages = senders.map((from) => textMessage(from, 'hi'));
    const db = f.database.handle.db;
    // The database refuses to keep the poisoned message for a retry too.
    await sql`create function refuse_retrying() returns trigger language plpgsql as $$
      begin
        if new.status = 'retrying' and new.external_key = ${sql.lit(messages[0]!.id as string)} then raise exception 'refused for the test'; end if;
        return new;
      end $$`.execute(db);
    await sql`create trigger refuse_retrying before insert on inbound_events for each row execute function refuse_retrying()`.execute(db);
    let status: number;
    try {
      status = (await f.post(envelope({ messages }))).status;
    } finally {
      await sql`drop trigger refuse_retrying on inbound_events`.execute(db);
      await sql`drop function refuse_retrying()`.execute(db);
    }
    assert.equal(status, 500, 'Meta is asked to send the POST again (what committed is then a duplicate)');
    assert.equal(await eventStatus(messages[0]!.id as string), undefined);
    for (const message of messages.slice(1)) assert.equal(await eventStatus(message.id as string), 'processed');
    await f.deps.outbox.idle();
    for (const from of senders.slice(1)) assert.equal((await repliesTo(from)).length, 1, `replied to ${from} at once`);
  });

  test('the retry sweep queues again an event whose retry job is gone, once, and leaves the rest alone', async () => {
    const [a, b] = [phone(), phone()];
    const lost = textMessage(a, 'hi');
    const waiting = textMessage(b, 'hi');
    poisoned = a;
    assert.equal((await f.post(envelope({ messages: [lost] }))).status, 200);
    poisoned = b;
    assert.equal((await f.post(envelope({ messages: [waiting] }))).status, 200);
    poisoned = null;
    const db = f.database.handle.db;
    const row = (key: string) => db.selectFrom('inbound_events').select(['id', 'status']).where('external_key', '=', key).executeTakeFirstOrThrow();
    const [lostRow, waitingRow] = [await row(lost.id as string), await row(waiting.id as string)];
    assert.deepEqual([lostRow.status, waitingRow.status], ['retrying', 'retrying']);
    // The first one's retry job is gone and it has waited three hours; the second's job is still there.
    await f.database.handle.pool.query(`delete from pgboss.job where name = 'retry-inbound-event' and data->>'eventId' = $1`, [lostRow.id]);
    await db.updateTable('inbound_events').set({ updated_at: sql`now() - interval '3 hours'` }).where('id', '=', lostRow.id).execute();
    const jobsFor = async (id: string) =>
      (await f.database.handle.pool.query(`select count(*)::int as n from pgboss.job where name = 'retry-inbound-event' and data->>'eventId' = $1`, [id])).rows[0].n as number;

    await f.deps.inbound.retrySweepJob.handle({}, { logger: f.deps.logger, jobId: 'sweep-1', retryCount: 0 });
    assert.equal(await jobsFor(lostRow.id), 1, 'queued again');
    assert.equal(await jobsFor(waitingRow.id), 1, 'the other keeps its one job');
    assert.match(await f.deps.metrics.registry.metrics(), /invoiceiq_inbound_stuck_events 1\b/);
    // Touched by the sweep: the next sweep does not queue it a second time.
    assert.equal(await f.deps.inbound.sweepRetries(), 0);
    assert.equal(await jobsFor(lostRow.id), 1);
    // And the retry job the sweep queued applies it (the job workers run in this fixture, so
    // calling the retry here would race them), once: another try finds nothing to do.
    await waitFor(async () => (await row(lost.id as string)).status === 'processed', 10_000, 'the queued retry job');
    assert.equal(await f.deps.inbound.retryEvent(lostRow.id), 'not_pending');
    await f.deps.outbox.idle();
    assert.equal((await repliesTo(a)).length, 1);
  });

  test('the same message twice in one POST, and that POST twenty times at once: one effect per message', async () => {
    const [a, b, c] = [phone(), phone(), phone()];
    const ma = textMessage(a, 'hi');
    const mb = textMessage(b, 'hi');
    const mc = textMessage(c, 'hi', wamid());
    const payload = envelope({ messages: [ma, mb, ma, mc] });
    const answers = await Promise.all(Array.from({ length: 20 }, () => f.post(payload)));
    assert.ok(answers.every((r) => r.status === 200));
    const events = await f.database.handle.db.selectFrom('inbound_events').select('external_key').where('external_key', 'in', [ma.id as string, mb.id as string, mc.id as string]).execute();
    assert.equal(events.length, 3);
    await f.deps.outbox.idle();
    for (const from of [a, b, c]) {
      assert.equal((await repliesTo(from)).length, 1, `one reply row for ${from}`);
      await waitFor(() => f.graph.sentTo(from).length >= 1);
      assert.equal(f.graph.sentTo(from).length, 1, `one send to ${from}`);
    }
  });
});
