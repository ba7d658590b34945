/**
 * Webhooks for another number of the same Meta app, and statuses for wamids we never stored
 * (review findings; each test fails with its fix undone).
 *
 * 1. Meta posts every number subscribed to the app to our one webhook URL, signed alike: a
 *    change whose metadata names another phone_number_id than WABA_PHONE_ID is skipped (no
 *    event, no conversation, no reply, no status applied), counted (other_number) and logged
 *    once per payload. A change without metadata is processed as before.
 * 2. A status for a wamid no message of ours has is kept for retries only while a WhatsApp send
 *    of ours is in flight (it may be that send's, not recorded yet); otherwise, or after its
 *    last try, it is recorded as processed (unknown_message), never parked as dead.
 *
 * Most tests build the inbound service here with `phoneId`; one goes through the app
 * createDeps builds (src/deps.ts passes WABA_PHONE_ID). The real route, database, outbox and
 * fake Graph server are the fixture's.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sql } from 'kysely';
import { createApp } from '../src/app.js';
import { createWhatsAppInbound } from '../src/inbound/whatsapp.js';
import { envelope, inboundText, PHONE_ID, signed, statusUpdate, textMessage, wamid } from './fixtures/whatsapp.js';
import { channelSuite, textDrafts, waitFor, type ChannelFixture } from './helpers/channel.js';
import { menuHandler } from './helpers/menu-conversation.js';

const OTHER_PHONE_ID = '105550009999123';

let f: ChannelFixture;
let app: ReturnType<typeof createApp>;
let inbound: ReturnType<typeof createWhatsAppInbound>;

channelSuite(
  {
    conversation: menuHandler,
    // Three tries; the safety net waits (rows written here stay queued until a test moves them);
    // no retry worker: the tests run retries by hand.
    env: { INBOUND_MAX_ATTEMPTS: '3', DELIVERY_SAFETY_NET_SECONDS: '3600' },
    idleQueues: ['retry-inbound-event'],
  },
  (started) => {
    f = started;
    inbound = createWhatsAppInbound({
      db: f.database.handle.db,
      jobs: f.deps.jobs,
      outbox: f.deps.outbox,
      conversation: menuHandler,
      metrics: f.deps.metrics,
      logger: f.deps.logger,
      maxAttempts: f.deps.config.delivery.inboundMaxAttempts,
      retryJobs: { mpesa_callback: f.deps.payments.callbackRetryJob },
      phoneId: f.deps.config.whatsapp.phoneId,
    });
    app = createApp({ ...f.deps, inbound });
  },
);

let next = 0;
const phone = () => `2547033${String((next += 1)).padStart(5, '0')}`;

function post(payload: unknown): Promise<Response> {
  const s = signed(payload);
  return Promise.resolve(app.request('/whatsapp/webhook', { method: 'POST', body: s.body, headers: s.headers }));
}

type Change = { value: Record<string, unknown> & { metadata?: { phone_number_id?: string } } };
type Payload = { entry: Array<{ changes: Change[] }> };

/** The payload with every change's metadata naming `phoneId`. */
function forNumber(payload: Record<string, unknown>, phoneId = OTHER_PHONE_ID): Payload {
  const copy = structuredClone(payload) as Payload;
  for (const entry of copy.entry) for (const change of entry.changes) change.value.metadata = { ...change.value.metadata, phone_number_id: phoneId };
  return copy;
}

/** The payload's changes, one after another, in one entry. */
const changesOf = (...payloads: Array<Record<string, unknown>>): Change[] => payloads.flatMap((p) => (p as Payload).entry.flatMap((e) => e.changes));

async function metric(labels: Record<string, string>): Promise<number> {
  const text = await f.deps.metrics.registry.metrics();
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const line = text.split('\n').find((l) => l.startsWith('invoiceiq_inbound_events_total{') && wanted.every((w) => l.includes(w)));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

const eventOf = (key: string) => f.database.handle.db.selectFrom('inbound_events').selectAll().where('external_key', '=', key).executeTakeFirst();
const conversationOf = (from: string) => f.database.handle.db.selectFrom('conversations').select('phone').where('phone', '=', from).executeTakeFirst();
const repliesTo = (to: string) => f.database.handle.db.selectFrom('outbound_messages').selectAll().where('recipient', '=', to).execute();
const skippedLogs = () => f.logs.lines.filter((l) => l.level === 'warn' && l.message.includes('another WhatsApp number'));

/** A message of ours, sent on WhatsApp: its row id and wamid. */
async function sentReply(to: string): Promise<{ id: string; wamid: string }> {
  assert.equal((await post(inboundText(to, 'hi'))).status, 200);
  await waitFor(async () => (await repliesTo(to)).some((r) => r.status === 'sent'), 5_000, 'reply sent');
  const [row] = await repliesTo(to);
  return { id: row!.id, wamid: row!.provider_message_id! };
}

/** An outbound row of ours whose WhatsApp send is in flight (sending, no channel yet, no wamid). */
async function inFlightSend(): Promise<string> {
  const [id] = await f.database.handle.db.transaction().execute((trx) => f.deps.outbox.enqueue(trx, textDrafts(phone(), 1)));
  await f.claimedElsewhere(id!);
  return id!;
}

/** The send ends: recorded as sent under `wamidOfSend`. */
async function recordSend(id: string, wamidOfSend: string): Promise<void> {
  await f.database.handle.db
    .updateTable('outbound_messages')
    .set({ status: 'sent', channel: 'whatsapp', provider_message_id: wamidOfSend, updated_at: sql`now()` })
    .where('id', '=', id)
    .execute();
}

async function retryJobs(eventId: string): Promise<number> {
  const { rows } = await f.database.handle.pool.query(`select count(*)::int as n from pgboss.job where name = 'retry-inbound-event' and data->>'eventId' = $1`, [eventId]);
  return (rows[0] as { n: number }).n;
}

describe('changes for another phone_number_id of the Meta app', () => {
  test('a message for another number: 200, no event, no conversation, no reply; counted, logged once with that id', async () => {
    const [a, b] = [phone(), phone()];
    const [idA, idB] = [wamid(), wamid()];
    const counted = await metric({ source: 'whatsapp_message', outcome: 'other_number' });
    const logged = skippedLogs().length;
    // Two changes for the other number in one payload (two entries): one log line.
    const payload = forNumber({ object: 'whatsapp_business_account', entry: [{ id: 'W1', changes: changesOf(inboundText(a, 'hi', idA)) }, { id: 'W2', changes: changesOf(inboundText(b, 'hi', idB)) }] });
    const res = await post(payload);
    assert.equal(res.status, 200);
    await f.deps.outbox.idle();
    for (const [from, id] of [[a, idA], [b, idB]] as const) {
      assert.equal(await eventOf(id), undefined, 'no inbound event');
      assert.equal(await conversationOf(from), undefined, 'no conversation');
      assert.equal((await repliesTo(from)).length, 0, 'no reply written');
      assert.equal(f.graph.sentTo(from).length, 0, 'no reply sent');
    }
    assert.equal(await metric({ source: 'whatsapp_message', outcome: 'other_number' }), counted + 2);
    const lines = skippedLogs().slice(logged);
    assert.equal(lines.length, 1, 'one warning for the payload');
    assert.deepEqual(lines[0]!.phone_number_ids, [Number(OTHER_PHONE_ID)], 'the other number id, unmasked');
  });

  test('the same message naming our phone_number_id is processed and answered', async () => {
    const from = phone();
    const id = wamid();
    const res = await post(forNumber(inboundText(from, 'hi', id), PHONE_ID));
    assert.equal(res.status, 200);
    assert.equal((await eventOf(id))?.status, 'processed');
    assert.ok(await conversationOf(from));
    await waitFor(() => f.graph.sentTo(from).length === 1, 5_000, 'reply sent');
  });

  test('a payload mixing both numbers processes only our changes', async () => {
    const [ours, theirs] = [phone(), phone()];
    const [idOurs, idTheirs] = [wamid(), wamid()];
    const counted = await metric({ source: 'whatsapp_message', outcome: 'other_number' });
    const payload = {
      object: 'whatsapp_business_account',
      entry: [{ id: 'W1', changes: [...changesOf(forNumber(inboundText(theirs, 'hi', idTheirs))), ...changesOf(inboundText(ours, 'hi', idOurs))] }],
    };
    assert.equal((await post(payload)).status, 200);
    assert.equal((await eventOf(idOurs))?.status, 'processed');
    assert.equal(await eventOf(idTheirs), undefined);
    assert.equal(await conversationOf(theirs), undefined);
    await waitFor(() => f.graph.sentTo(ours).length === 1, 5_000, 'our reply sent');
    await f.deps.outbox.idle();
    assert.equal(f.graph.sentTo(theirs).length, 0);
    assert.equal((await repliesTo(theirs)).length, 0);
    assert.equal(await metric({ source: 'whatsapp_message', outcome: 'other_number' }), counted + 1);
  });

  test('a status for another number is not applied, even to a wamid of ours; ours then is', async () => {
    const to = phone();
    const m = await sentReply(to);
    const counted = await metric({ source: 'whatsapp_status', outcome: 'other_number' });
    assert.equal((await post(forNumber(statusUpdate(m.wamid, 'read', to)))).status, 200);
    assert.equal((await repliesTo(to))[0]!.status, 'sent', 'not moved by the other number');
    assert.equal(await eventOf(`${m.wamid}:read`), undefined, 'no event stored');
    assert.equal(await metric({ source: 'whatsapp_status', outcome: 'other_number' }), counted + 1);
    assert.equal((await post(statusUpdate(m.wamid, 'read', to))).status, 200);
    assert.equal((await repliesTo(to))[0]!.status, 'read');
  });

  test('a change without metadata is processed as before', async () => {
    const from = phone();
    const id = wamid();
    const payload = forNumber(inboundText(from, 'hi', id));
    for (const entry of payload.entry) for (const change of entry.changes) delete change.value.metadata;
    assert.equal((await post(payload)).status, 200);
    assert.equal((await eventOf(id))?.status, 'processed');
    await waitFor(() => f.graph.sentTo(from).length === 1, 5_000, 'reply sent');
  });

  // Through the app createDeps builds (the fixture's): src/deps.ts gives the inbound service
  // `phoneId: config.whatsapp.phoneId`.
  test('createDeps passes WABA_PHONE_ID to the inbound service', async () => {
    const from = phone();
    const id = wamid();
    assert.equal((await f.post(envelope({ messages: [textMessage(from, 'hi', id)] }))).status, 200);
    assert.equal((await eventOf(id))?.status, 'processed', 'our number still processed');
    const other = wamid();
    assert.equal((await f.post(forNumber(envelope({ messages: [textMessage(phone(), 'hi', other)] })))).status, 200);
    assert.equal(await eventOf(other), undefined, 'another number skipped');
  });
});

describe('statuses for wamids we never stored', () => {
  test('with no WhatsApp send in flight: recorded as unknown_message at once, no retry, not dead; a copy is a duplicate', async () => {
    const inFlight = await f.database.handle.db.selectFrom('outbound_messages').select('id').where('status', '=', 'sending').execute();
    assert.equal(inFlight.length, 0, 'nothing in flight');
    const key = 'wamid.sent-from-whatsapp-manager-1';
    const unknown = await metric({ source: 'whatsapp_status', outcome: 'unknown_message' });
    const dead = await metric({ source: 'whatsapp_status', outcome: 'dead' });
    assert.equal((await post(statusUpdate(key, 'delivered', phone()))).status, 200);
    const event = await eventOf(`${key}:delivered`);
    assert.equal(event?.status, 'processed');
    assert.match(event?.last_error ?? '', /unknown wamid/);
    assert.equal(await retryJobs(event!.id), 0, 'no retry queued');
    assert.equal(await metric({ source: 'whatsapp_status', outcome: 'unknown_message' }), unknown + 1);
    assert.equal((await post(statusUpdate(key, 'delivered', phone()))).status, 200);
    assert.equal(await metric({ source: 'whatsapp_status', outcome: 'unknown_message' }), unknown + 1, 'the copy is a duplicate');
    assert.equal(await inbound.retryEvent(event!.id), 'not_pending');
    assert.equal(await metric({ source: 'whatsapp_status', outcome: 'dead' }), dead);
  });

  test('while a WhatsApp send of ours is in flight it is kept and retried, and applied once that send records this wamid', async () => {
    const sending = await inFlightSend();
    const key = wamid();
    assert.equal((await post(statusUpdate(key, 'delivered', phone()))).status, 200);
    const event = await eventOf(`${key}:delivered`);
    assert.equal(event?.status, 'retrying');
    assert.equal(await retryJobs(event!.id), 1);
    assert.equal(await inbound.retryEvent(event!.id), 'retrying', 'still in flight');
    await recordSend(sending, key);
    assert.equal(await inbound.retryEvent(event!.id), 'processed');
    assert.equal((await eventOf(`${key}:delivered`))?.last_error, null);
    const row = await f.database.handle.db.selectFrom('outbound_messages').select('status').where('id', '=', sending).executeTakeFirstOrThrow();
    assert.equal(row.status, 'delivered');
  });

  test('a kept one whose in-flight send ends with another wamid is recorded as unknown_message on its next try', async () => {
    const sending = await inFlightSend();
    const key = wamid();
    assert.equal((await post(statusUpdate(key, 'read', phone()))).status, 200);
    const event = await eventOf(`${key}:read`);
    assert.equal(event?.status, 'retrying');
    await recordSend(sending, wamid());
    const unknown = await metric({ source: 'whatsapp_status', outcome: 'unknown_message' });
    assert.equal(await inbound.retryEvent(event!.id), 'processed');
    const settled = await eventOf(`${key}:read`);
    assert.equal(settled?.status, 'processed');
    assert.equal(settled?.attempts, 2);
    assert.match(settled?.last_error ?? '', /unknown wamid/);
    assert.equal(await metric({ source: 'whatsapp_status', outcome: 'unknown_message' }), unknown + 1);
  });

  test('sends in flight on every try: after the last try (INBOUND_MAX_ATTEMPTS 3) it is unknown_message, not dead, and not retried again', async () => {
    const sending = await inFlightSend();
    try {
      const key = wamid();
      const unknown = await metric({ source: 'whatsapp_status', outcome: 'unknown_message' });
      const dead = await metric({ source: 'whatsapp_status', outcome: 'dead' });
      const errors = f.logs.lines.filter((l) => l.level === 'error').length;
      assert.equal((await post(statusUpdate(key, 'sent', phone()))).status, 200);
      const event = await eventOf(`${key}:sent`);
      assert.equal(event?.status, 'retrying');
      assert.equal(await inbound.retryEvent(event!.id), 'retrying');
      assert.equal(await inbound.retryEvent(event!.id), 'processed');
      assert.equal(await inbound.retryEvent(event!.id), 'not_pending');
      const settled = await eventOf(`${key}:sent`);
      assert.equal(settled?.status, 'processed');
      assert.equal(settled?.attempts, 3);
      assert.equal(await metric({ source: 'whatsapp_status', outcome: 'dead' }), dead);
      assert.equal(await metric({ source: 'whatsapp_status', outcome: 'unknown_message' }), unknown + 1);
      assert.equal(f.logs.lines.filter((l) => l.level === 'error').length, errors, 'no error logged');
    } finally {
      await recordSend(sending, wamid());
    }
  });
});
