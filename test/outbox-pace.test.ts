/**
 * The outbox pacing WhatsApp sends (WABA_MAX_SENDS_PER_SECOND, src/delivery/pace.ts): a burst
 * goes out spaced at the rate, and a send whose slot is too far away is put back for later with
 * no try counted and no SMS, then goes when its time comes. Real database (both kinds), a fake
 * Graph API on 127.0.0.1 that records when each request arrived.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createOutbox } from '../src/delivery/outbox.js';
import type { WhatsAppClient } from '../src/providers/whatsapp/client.js';
import { channelSuite, startChannelFixture, textDrafts, waitFor, type ChannelFixture } from './helpers/channel.js';

const PER_SECOND = 20;
const INTERVAL_MS = 1000 / PER_SECOND;

// No safety-net job racing the sends under test (it would deliver the same rows first).
let f: ChannelFixture;
channelSuite({ env: { WABA_MAX_SENDS_PER_SECOND: String(PER_SECOND), DELIVERY_SAFETY_NET_SECONDS: '3600' } }, (started) => (f = started));

let next = 100;
const phone = () => `2547033${String((next += 1)).padStart(5, '0')}`;

/** One message to each of `n` new people (inside their 24-hour window). */
async function oneEach(n: number): Promise<{ people: string[]; ids: string[] }> {
  const people = Array.from({ length: n }, phone);
  const ids: string[] = [];
  for (const to of people) {
    await f.chatting(to);
    ids.push(...(await f.database.handle.db.transaction().execute((trx) => f.deps.outbox.enqueue(trx, textDrafts(to, 1)))));
  }
  return { people, ids };
}

async function paced(outcome: 'waited' | 'deferred' | 'slowed_down'): Promise<number> {
  const text = await f.deps.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith('invoiceiq_whatsapp_sends_paced_total{') && l.includes(`outcome="${outcome}"`));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

/**
 * An outbox of its own (its own pace) that records when each send starts, as it calls the
 * real WhatsApp client: the fake Graph's arrival times would not do, as this process's event
 * loop (PGlite runs on it) can hold one arrival back and bunch it with the next.
 */
function timedOutbox() {
  const starts: number[] = [];
  const timed: WhatsAppClient = {
    configured: f.deps.whatsapp.configured,
    send: (to, content) => (starts.push(performance.now()), f.deps.whatsapp.send(to, content)),
    sendTemplate: (to, template) => (starts.push(performance.now()), f.deps.whatsapp.sendTemplate(to, template)),
  };
  const outbox = createOutbox({ db: f.database.handle.db, jobs: f.deps.jobs, whatsapp: timed, sms: f.deps.sms, config: f.deps.config, metrics: f.deps.metrics, logger: f.deps.logger });
  return { outbox, starts };
}

const rows = (ids: string[]) =>
  f.database.handle.db.selectFrom('outbound_messages').select(['id', 'status', 'attempts', 'channel', 'next_attempt_at']).where('id', 'in', ids).execute();

test('a burst to many people goes out spaced at the rate, each message once and on its first try', async () => {
  const { people, ids } = await oneEach(12);
  const waitedBefore = await paced('waited');
  const { outbox, starts } = timedOutbox();
  const outcomes = await outbox.deliverMany(ids);
  assert.deepEqual([...new Set(outcomes.values())], ['sent']);
  assert.equal(starts.length, 12);
  // At most one send per interval: the i-th starts at least i intervals after the first (a timer
  // may fire up to a millisecond early). Counted from the first, which the fresh pace lets go at
  // once with no await before its send, not gap by gap: a send's start can lag the moment the
  // pace let it go by a few ms (PGlite's work shares this event loop), which shortens the gap
  // after it without any two being let go closer than the interval.
  starts.sort((a, b) => a - b);
  for (let i = 1; i < starts.length; i += 1) assert.ok(starts[i]! - starts[0]! >= i * INTERVAL_MS - 1.5, `send ${i}: ${starts[i]! - starts[0]!} ms after the first`);
  assert.ok((await paced('waited')) - waitedBefore >= 11);
  for (const to of people) assert.equal(f.graph.sentTo(to).length, 1, to);
  for (const row of await rows(ids)) assert.deepEqual([row.status, row.attempts, row.channel], ['sent', 1, 'whatsapp']);
  assert.equal(f.sms.length, 0);
});

test('a send whose slot is further than it may wait is put back, no try counted, no SMS; it goes when its time comes', async () => {
  const { people, ids } = await oneEach(12);
  const deferredBefore = await paced('deferred');
  // An outbox that waits at most 120 ms for a slot: at 20 a second the slots at 0, 50 and 100 ms.
  const outbox = f.anotherOutbox({ paceMaxWaitMs: 120 });
  const outcomes = await outbox.deliverMany(ids);
  const counts = new Map<string, number>();
  for (const outcome of outcomes.values()) counts.set(String(outcome), (counts.get(String(outcome)) ?? 0) + 1);
  assert.deepEqual(Object.fromEntries(counts), { sent: 3, retry_scheduled: 9 });
  assert.equal(people.filter((to) => f.graph.sentTo(to).length > 0).length, 3);
  assert.equal((await paced('deferred')) - deferredBefore, 9);
  const putBack = (await rows(ids)).filter((row) => row.status !== 'sent');
  assert.equal(putBack.length, 9);
  for (const row of putBack) {
    assert.deepEqual([row.status, row.attempts, row.channel], ['queued', 0, null], 'not counted as a try');
    assert.ok(row.next_attempt_at !== null && row.next_attempt_at.getTime() > Date.now() - 1_000);
  }
  // Their jobs send them (the fixture's own outbox, which waits up to 10 s for a slot).
  await waitFor(async () => (await rows(ids)).every((row) => row.status === 'sent'), 30_000, 'the deferred messages sent by their jobs');
  for (const row of await rows(ids)) assert.deepEqual([row.status, row.attempts, row.channel], ['sent', 1, 'whatsapp']);
  for (const to of people) assert.equal(f.graph.sentTo(to).length, 1, to);
  assert.equal(f.sms.length, 0, 'pacing never sends by SMS');
});

test('Meta answering 130429 halves the pace: the sends after it go at least twice the interval apart', async () => {
  const { people, ids } = await oneEach(6);
  const { outbox, starts } = timedOutbox();
  f.graph.queue({ kind: 'error', status: 429, code: 130429, message: '(#130429) Rate limit hit' });
  const slowedBefore = await paced('slowed_down');
  const first = await outbox.deliverMany(ids.slice(0, 1));
  assert.equal(first.get(ids[0]!), 'retry_scheduled');
  assert.equal((await paced('slowed_down')) - slowedBefore, 1);
  const rest = await outbox.deliverMany(ids.slice(1));
  assert.deepEqual([...new Set(rest.values())], ['sent']);
  const refused = starts[0]!;
  const after429 = starts.slice(1).sort((a, b) => a - b);
  assert.equal(after429.length, 5);
  // The i-th after it starts at least i + 1 doubled intervals after the refused send (let go at
  // once by the fresh pace); counted from there rather than gap by gap, as in the test above.
  for (let i = 0; i < after429.length; i += 1) assert.ok(after429[i]! - refused >= (i + 1) * 2 * INTERVAL_MS - 1.5, `send ${i + 1}: ${after429[i]! - refused} ms after the refused one`);
  for (const to of people.slice(1)) assert.equal(f.graph.sentTo(to).length, 1, to);
});

test('shutdown puts back the sends still waiting for their turn (no try counted) and starts none of them; their jobs send them after', async () => {
  const { people, ids } = await oneEach(8);
  const { outbox, starts } = timedOutbox();
  const delivering = outbox.deliverMany(ids);
  await waitFor(() => starts.length >= 2, 5_000, 'two sends started');
  const stopped = outbox.stop();
  // Counted as stop() begins (it closes the pace at once): nothing may start after this.
  const startedBeforeStop = starts.length;
  await stopped;
  const outcomes = await delivering;
  assert.ok(startedBeforeStop < 8, `${startedBeforeStop} started`);
  const counts = new Map<string, number>();
  for (const outcome of outcomes.values()) counts.set(String(outcome), (counts.get(String(outcome)) ?? 0) + 1);
  assert.equal(counts.get('sent'), startedBeforeStop);
  assert.equal(counts.get('retry_scheduled'), 8 - startedBeforeStop);
  assert.equal(starts.length, startedBeforeStop, 'nothing started once stopped');
  const putBack = (await rows(ids)).filter((row) => row.status !== 'sent');
  assert.equal(putBack.length, 8 - startedBeforeStop);
  for (const row of putBack) assert.deepEqual([row.status, row.attempts], ['queued', 0]);
  await waitFor(async () => (await rows(ids)).every((row) => row.status === 'sent'), 30_000, 'the put-back messages sent by their jobs');
  for (const to of people) assert.equal(f.graph.sentTo(to).length, 1, to);
});

test('once shutdown has begun (before the job workers stop: src/service.ts) a job\'s delivery starts no send either: put back for later', async () => {
  const { people, ids } = await oneEach(3);
  const { outbox, starts } = timedOutbox();
  outbox.beginStop();
  const outcomes = await outbox.deliverMany(ids);
  assert.deepEqual([...new Set(outcomes.values())], ['retry_scheduled']);
  assert.equal(starts.length, 0);
  for (const row of await rows(ids)) assert.deepEqual([row.status, row.attempts], ['queued', 0]);
  await waitFor(async () => (await rows(ids)).every((row) => row.status === 'sent'), 30_000, 'sent by their jobs');
  for (const to of people) assert.equal(f.graph.sentTo(to).length, 1, to);
});

test('with the pace off (0) a burst is not held back', async () => {
  const unpaced = await startChannelFixture({ env: { WABA_MAX_SENDS_PER_SECOND: '0', DELIVERY_SAFETY_NET_SECONDS: '3600' } });
  try {
    const people = Array.from({ length: 20 }, phone);
    const ids: string[] = [];
    for (const to of people) {
      await unpaced.chatting(to);
      ids.push(...(await unpaced.database.handle.db.transaction().execute((trx) => unpaced.deps.outbox.enqueue(trx, textDrafts(to, 1)))));
    }
    const outcomes = await unpaced.anotherOutbox({ paceMaxWaitMs: 0 }).deliverMany(ids.slice(0, 17));
    assert.deepEqual([...new Set(outcomes.values())], ['sent']);
    // Off or not, once shutdown has begun no send starts: the rest are put back for their jobs.
    const closing = unpaced.anotherOutbox();
    closing.beginStop();
    const late = await closing.deliverMany(ids.slice(17));
    assert.deepEqual([...new Set(late.values())], ['retry_scheduled']);
    for (const to of people.slice(17)) assert.equal(unpaced.graph.sentTo(to).length, 0, to);
  } finally {
    await unpaced.close();
  }
});
