import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import type { ConversationHandler } from '../src/conversation/port.js';
import { menuHandler } from './helpers/menu-conversation.js';
import { signBody } from '../src/providers/whatsapp/signature.js';
import { envelope, inboundText, signed, statusUpdate, textMessage, wamid, APP_SECRET } from './fixtures/whatsapp.js';
import { startChannelFixture, VERIFY_TOKEN, waitFor, type ChannelFixture } from './helpers/channel.js';

const MERCHANT = '254712345678';

/** A conversation handler the tests can make fail on demand. */
let failuresLeft = 0;
const flakyConversation: ConversationHandler = async (trx, message) => {
  if (failuresLeft > 0) {
    failuresLeft -= 1;
    throw new Error('conversation store unavailable');
  }
  return menuHandler(trx, message);
};

let f: ChannelFixture;
before(async () => {
  // No retry worker: the tests that keep an event run its retries by hand, and a worker taking
  // the retry job (due 1-2 s after the event was kept) first would answer them not_pending.
  f = await startChannelFixture({ conversation: flakyConversation, env: { INBOUND_MAX_ATTEMPTS: '3' }, idleQueues: ['retry-inbound-event'] });
});
after(() => f.close());
beforeEach(async () => {
  await f.deps.outbox.idle();
  failuresLeft = 0;
  f.graph.reset();
});

async function metric(name: string, labels: string): Promise<number> {
  const text = await f.deps.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

describe('GET /whatsapp/webhook (verification)', () => {
  test('answers the challenge as text/plain when the token matches', async () => {
    const res = await f.app.request(`/whatsapp/webhook?hub.mode=subscribe&hub.verify_token=${VERIFY_TOKEN}&hub.challenge=1158201444`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    assert.equal(await res.text(), '1158201444');
  });

  for (const [name, query] of [
    ['wrong token', `hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1`],
    ['wrong mode', `hub.mode=unsubscribe&hub.verify_token=${VERIFY_TOKEN}&hub.challenge=1`],
    ['no token', `hub.mode=subscribe&hub.challenge=1`],
    ['nothing', ''],
  ] as const) {
    test(`403 for ${name}`, async () => {
      const res = await f.app.request(`/whatsapp/webhook?${query}`);
      assert.equal(res.status, 403);
    });
  }
});

describe('POST /whatsapp/webhook signatures', () => {
  const cases: Array<[string, (body: string) => Record<string, string>]> = [
    ['missing', () => ({})],
    ['empty', () => ({ 'x-hub-signature-256': '' })],
    ['without the sha256= prefix', (body) => ({ 'x-hub-signature-256': signBody(body, APP_SECRET).slice(7) })],
    ['truncated', (body) => ({ 'x-hub-signature-256': signBody(body, APP_SECRET).slice(0, 40) })],
    ['signed with another secret', (body) => ({ 'x-hub-signature-256': signBody(body, 'not-the-secret') })],
    ['for other bytes', () => ({ 'x-hub-signature-256': signBody('{}', APP_SECRET) })],
  ];
  for (const [name, headers] of cases) {
    test(`401 and nothing stored when the signature is ${name}`, async () => {
      const before = await metric('invoiceiq_webhook_signature_failures_total', '');
      const events = await f.count('inbound_events');
      const body = JSON.stringify(inboundText(MERCHANT, 'hello'));
      const res = await f.app.request('/whatsapp/webhook', { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers(body) } });
      assert.equal(res.status, 401);
      assert.equal((await res.json() as { code: string }).code, 'invalid_signature');
      assert.equal(await f.count('inbound_events'), events);
      const text = await f.deps.metrics.registry.metrics();
      const total = text.split('\n').filter((l) => l.startsWith('invoiceiq_webhook_signature_failures_total{')).reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
      assert.ok(total > before);
      assert.ok(!f.logs.text().includes('hello'), 'the body never reaches the logs');
    });
  }

  test('a body re-encoded after signing (Meta escapes unicode) is refused', async () => {
    const original = JSON.stringify(inboundText(MERCHANT, 'caf\u00e9')).replace('é', '\\u00e9');
    const reencoded = JSON.stringify(JSON.parse(original));
    assert.notEqual(original, reencoded);
    const res = await f.app.request('/whatsapp/webhook', {
      method: 'POST',
      body: reencoded,
      headers: { 'content-type': 'application/json', 'x-hub-signature-256': signBody(original, APP_SECRET) },
    });
    assert.equal(res.status, 401);
    const ok = await f.app.request('/whatsapp/webhook', {
      method: 'POST',
      body: original,
      headers: { 'content-type': 'application/json', 'x-hub-signature-256': signBody(original, APP_SECRET) },
    });
    assert.equal(ok.status, 200);
  });
});

describe('POST /whatsapp/webhook processing', () => {
  test('a text message is recorded once, opens the window and gets a reply after the 200', async () => {
    const from = '254700000001';
    const id = wamid();
    const res = await f.post(inboundText(from, 'hi', id));
    assert.equal(res.status, 200);
    const event = await f.database.handle.db.selectFrom('inbound_events').selectAll().where('external_key', '=', id).executeTakeFirstOrThrow();
    assert.equal(event.status, 'processed');
    assert.equal(event.source, 'whatsapp_message');
    const conversation = await f.database.handle.db.selectFrom('conversations').selectAll().where('phone', '=', from).executeTakeFirstOrThrow();
    assert.ok(conversation.last_inbound_at instanceof Date);
    await waitFor(() => f.graph.sentTo(from).length === 1, 5_000, 'reply sent');
    const [reply] = f.graph.sentTo(from);
    assert.equal(reply!.body.type, 'interactive');
    assert.equal(reply!.headers.authorization, 'Bearer graph-token-secret');
    await waitFor(async () => (await f.database.handle.db.selectFrom('outbound_messages').select('status').where('recipient', '=', from).executeTakeFirstOrThrow()).status === 'sent');
    const message = await f.database.handle.db.selectFrom('outbound_messages').selectAll().where('recipient', '=', from).executeTakeFirstOrThrow();
    assert.equal(message.channel, 'whatsapp');
    assert.match(message.provider_message_id ?? '', /^wamid\.FAKE/);
  });

  test('no provider call happens before the 200: a hanging Graph API does not delay the answer', async () => {
    f.graph.setFallback({ kind: 'hang' });
    const from = '254700000002';
    const before = f.graph.requests.length;
    const res = await f.post(inboundText(from, 'hi'));
    assert.equal(res.status, 200);
    assert.equal(f.graph.requests.length, before, 'the send had not started when the answer was ready');
    await waitFor(() => f.graph.sentTo(from).length === 1, 5_000, 'eager dispatch after the answer');
  });

  test('the same POST twice, then twenty times concurrently, has one effect', async () => {
    const from = '254700000003';
    const payload = inboundText(from, 'hello', wamid());
    assert.equal((await f.post(payload)).status, 200);
    assert.equal((await f.post(payload)).status, 200);
    const again = inboundText('254700000004', 'hello', wamid());
    const answers = await Promise.all(Array.from({ length: 20 }, () => f.post(again)));
    assert.ok(answers.every((r) => r.status === 200));
    await f.deps.outbox.idle();
    for (const phone of [from, '254700000004']) {
      const rows = await f.database.handle.db.selectFrom('outbound_messages').select('id').where('recipient', '=', phone).execute();
      assert.equal(rows.length, 1, `one reply row for ${phone}`);
      await waitFor(() => f.graph.sentTo(phone).length >= 1);
      assert.equal(f.graph.sentTo(phone).length, 1, `one send for ${phone}`);
    }
  });

  test('several entries, changes, messages and statuses in one POST are all handled', async () => {
    const a = textMessage('254700000011', 'one');
    const b = textMessage('254700000012', 'two');
    const c = textMessage('254700000011', 'three');
    const payload = {
      object: 'whatsapp_business_account',
      entry: [
        { id: 'W1', changes: [{ field: 'messages', value: { messaging_product: 'whatsapp', messages: [a, c] } }] },
        {
          id: 'W2',
          changes: [
            { field: 'messages', value: { messaging_product: 'whatsapp', messages: [b] } },
            { field: 'messages', value: { messaging_product: 'whatsapp', statuses: (statusUpdate('wamid.unknown', 'read', '254700000012') as { entry: Array<{ changes: Array<{ value: { statuses: unknown[] } }> }> }).entry[0]!.changes[0]!.value.statuses } },
          ],
        },
      ],
    };
    const res = await f.post(payload);
    assert.equal(res.status, 200);
    const keys = (await f.database.handle.db.selectFrom('inbound_events').select('external_key').where('external_key', 'in', [a.id as string, b.id as string, c.id as string]).execute()).map((r) => r.external_key);
    assert.equal(keys.length, 3);
    // The unknown wamid's status is stored, not dropped: kept for a retry while a reply of ours
    // is being sent (it may be that send's), otherwise recorded as about no message of ours.
    const status = await f.database.handle.db.selectFrom('inbound_events').selectAll().where('external_key', '=', 'wamid.unknown:read').executeTakeFirstOrThrow();
    if (status.status === 'processed') assert.match(status.last_error ?? '', /^unknown wamid/);
    else assert.equal(status.status, 'retrying');
  });

  test('every message type is accepted without error', async () => {
    const from = '254700000020';
    const base = () => ({ from, id: wamid(), timestamp: String(Math.floor(Date.now() / 1000)) });
    const messages = [
      { ...base(), type: 'image', image: { id: 'media1', mime_type: 'image/jpeg', sha256: 'x' } },
      { ...base(), type: 'audio', audio: { id: 'media2', mime_type: 'audio/ogg', voice: true } },
      { ...base(), type: 'video', video: { id: 'media3' } },
      { ...base(), type: 'document', document: { id: 'media4', filename: 'a.pdf' } },
      { ...base(), type: 'sticker', sticker: { id: 'media5', animated: false } },
      { ...base(), type: 'location', location: { latitude: -1.28, longitude: 36.82, name: 'Nairobi' } },
      { ...base(), type: 'contacts', contacts: [{ name: { formatted_name: 'A' }, phones: [{ phone: '+254700000000' }] }] },
      { ...base(), type: 'reaction', reaction: { message_id: 'wamid.x', emoji: '👍' } },
      { ...base(), type: 'order', order: { catalog_id: '1', product_items: [] } },
      { ...base(), type: 'system', system: { body: 'changed number', type: 'user_changed_number' } },
      { ...base(), type: 'unsupported', errors: [{ code: 131051, title: 'Message type unknown' }] },
      { ...base(), type: 'button', button: { payload: 'pay:INV-0007', text: 'Pay now' } },
      { ...base(), type: 'interactive', interactive: { type: 'button_reply', button_reply: { id: 'confirm_send', title: 'Send' } } },
      { ...base(), type: 'interactive', interactive: { type: 'list_reply', list_reply: { id: 'pay:INV-0002', title: 'INV-0002', description: 'KES 1,500' } } },
      { ...base(), type: 'text', text: { body: '' }, context: { from: '15550001111', id: 'wamid.prev' } },
    ];
    const res = await f.post(envelope({ messages }));
    assert.equal(res.status, 200);
    const processed = await f.database.handle.db
      .selectFrom('inbound_events')
      .select('status')
      .where('external_key', 'in', messages.map((m) => m.id))
      .execute();
    assert.equal(processed.length, messages.length);
    assert.ok(processed.every((p) => p.status === 'processed'));
  });

  test('a signed payload that does not match the schema is stored as rejected and answered 200', async () => {
    const before = await metric('invoiceiq_inbound_events_total', 'outcome="rejected"');
    const bad = { object: 'whatsapp_business_account', entry: [{ id: 'W', changes: [{ field: 'messages', value: { messages: [{ id: 'x', type: 'text' }] } }] }] };
    const res = await f.post(bad);
    assert.equal(res.status, 200);
    const notJson = signed('{"object": "whatsapp_business_account", ');
    const res2 = await f.app.request('/whatsapp/webhook', { method: 'POST', body: notJson.body, headers: notJson.headers });
    assert.equal(res2.status, 200);
    const rejected = await f.database.handle.db.selectFrom('inbound_events').selectAll().where('source', '=', 'whatsapp_payload').execute();
    assert.equal(rejected.length, 2);
    assert.ok(rejected.every((r) => r.status === 'rejected' && (r.last_error ?? '').length > 0));
    assert.equal(await metric('invoiceiq_inbound_events_total', 'outcome="rejected"'), before + 2);
    // The same rejected payload again is not stored twice.
    await f.post(bad);
    assert.equal((await f.database.handle.db.selectFrom('inbound_events').select('id').where('source', '=', 'whatsapp_payload').execute()).length, 2);
  });

  test('a payload whose envelope is not a WhatsApp webhook is stored whole as rejected', async () => {
    const res = await f.post({ object: 'page', entry: [] });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'rejected' });
    const row = await f.database.handle.db.selectFrom('inbound_events').selectAll().where('source', '=', 'whatsapp_payload').where('last_error', 'like', 'object:%').executeTakeFirstOrThrow();
    assert.equal(row.status, 'rejected');
  });

  test('one message or status we cannot read costs the others in its payload nothing: they are applied, it is kept as rejected (was a defect: the whole payload was rejected)', async () => {
    const [a, b] = ['254700000041', '254700000042'];
    const [idA, idB] = [wamid(), wamid()];
    const now = String(Math.floor(Date.now() / 1000));
    const payload = envelope({
      contacts: [{ wa_id: a, profile: { name: 'Akinyi' } }, { wa_id: 254700000043 }],
      messages: [
        textMessage(a, 'hello', idA),
        { id: wamid(), timestamp: now, type: 'text', text: { body: 'no sender' } },
        textMessage(b, 'hello', idB),
        { from: b, id: wamid(), timestamp: now, type: 'text', text: {} },
      ],
      statuses: [{ id: 'wamid.unknown', status: 'pending', timestamp: now, recipient_id: a }],
    });
    const rejectedBefore = await metric('invoiceiq_inbound_events_total', 'outcome="rejected"');
    const earlier = new Set<string>();
    const kept = async () => {
      const rows = await f.database.handle.db.selectFrom('inbound_events').select(['id', 'payload', 'last_error']).where('source', '=', 'whatsapp_payload').orderBy('last_error').execute();
      return rows.filter((r) => !earlier.has(r.id));
    };
    for (const r of await kept()) earlier.add(r.id);
    const res = await f.post(payload);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'received', rejected: 4 });
    const applied = await f.database.handle.db.selectFrom('inbound_events').select(['external_key', 'status']).where('external_key', 'in', [idA, idB]).execute();
    assert.deepEqual(applied.map((e) => e.status), ['processed', 'processed']);
    await f.deps.outbox.idle();
    assert.equal(f.graph.sentTo(a).length, 1, 'A is answered');
    assert.equal(f.graph.sentTo(b).length, 1, 'B is answered');

    const rejected = await kept();
    assert.deepEqual(
      rejected.map((r) => (r.payload as { at: string }).at),
      ['entry.0.changes.0.value.contacts.1', 'entry.0.changes.0.value.messages.1', 'entry.0.changes.0.value.messages.3', 'entry.0.changes.0.value.statuses.0'],
    );
    assert.match(rejected[3]!.last_error ?? '', /statuses\.0: status: /);
    assert.deepEqual((rejected[3]!.payload as { item: unknown }).item, { id: 'wamid.unknown', status: 'pending', timestamp: now, recipient_id: a });
    assert.equal(await metric('invoiceiq_inbound_events_total', 'outcome="rejected"'), rejectedBefore + 4);
    assert.ok(!f.logs.text().includes('no sender'), 'message text stays out of the logs');

    // Meta sending it again stores nothing twice and answers nobody twice.
    assert.equal((await f.post(payload)).status, 200);
    assert.equal((await kept()).length, 4);
    assert.equal(await metric('invoiceiq_inbound_events_total', 'outcome="rejected"'), rejectedBefore + 4, 'counted once');
    await f.deps.outbox.idle();
    assert.equal(f.graph.sentTo(a).length, 1);
    assert.equal(f.graph.sentTo(b).length, 1);
  });

  test('a failing event is kept, retried from the stored copy and then processed', async () => {
    const from = '254700000030';
    const id = wamid();
    // It fails in its group and again on its own (the second try a failed group gets).
    failuresLeft = 2;
    const res = await f.post(inboundText(from, 'hello', id));
    assert.equal(res.status, 200);
    const stored = await f.database.handle.db.selectFrom('inbound_events').selectAll().where('external_key', '=', id).executeTakeFirstOrThrow();
    assert.equal(stored.status, 'retrying');
    assert.match(stored.last_error ?? '', /conversation store unavailable/);
    const job = await f.database.handle.pool.query(`select count(*)::int as n from pgboss.job where name = 'retry-inbound-event' and data->>'eventId' = $1`, [stored.id]);
    assert.equal(job.rows[0].n, 1, 'a retry job is queued with the event');
    // Meta delivering it again meanwhile changes nothing.
    assert.equal((await f.post(inboundText(from, 'hello', id))).status, 200);
    assert.equal(await f.deps.inbound.retryEvent(stored.id), 'processed');
    assert.equal(await f.deps.inbound.retryEvent(stored.id), 'not_pending');
    await f.deps.outbox.idle();
    assert.equal(f.graph.sentTo(from).length, 1);
  });

  test('a message stamped two days ahead of our clock opens the 24-hour window from now, not from its stamp, in a group and on its retry (was a defect)', async () => {
    const ahead = Math.floor(Date.now() / 1000) + 2 * 86_400;
    const windowOf = async (phone: string) =>
      (await f.database.handle.db.selectFrom('conversations').select('last_inbound_at').where('phone', '=', phone).executeTakeFirstOrThrow()).last_inbound_at!;
    const envelopeWith = (from: string, id: string) => envelope({ contacts: [{ profile: { name: 'Wanjiku' }, wa_id: from }], messages: [textMessage(from, 'hi', id, ahead)] });

    // In a group (the usual path).
    const grouped = '254700000032';
    assert.equal((await f.post(envelopeWith(grouped, wamid()))).status, 200);
    const first = await windowOf(grouped);
    assert.ok(first.getTime() <= Date.now() + 1000, `the window runs from ${first.toISOString()}`);

    // Alone, on the retry of an event whose group and first try failed.
    const retried = '254700000033';
    const id = wamid();
    failuresLeft = 2;
    assert.equal((await f.post(envelopeWith(retried, id))).status, 200);
    const stored = await f.database.handle.db.selectFrom('inbound_events').select('id').where('external_key', '=', id).executeTakeFirstOrThrow();
    assert.equal(await f.deps.inbound.retryEvent(stored.id), 'processed');
    const second = await windowOf(retried);
    assert.ok(second.getTime() <= Date.now() + 1000, `the window runs from ${second.toISOString()}`);
    await f.deps.outbox.idle();
  });

  test('an event that keeps failing is parked as dead after the bounded number of tries and counted', async () => {
    const id = wamid();
    failuresLeft = 100;
    await f.post(inboundText('254700000031', 'hello', id));
    const stored = await f.database.handle.db.selectFrom('inbound_events').selectAll().where('external_key', '=', id).executeTakeFirstOrThrow();
    const deadBefore = await metric('invoiceiq_inbound_events_total', 'outcome="dead"');
    assert.equal(await f.deps.inbound.retryEvent(stored.id), 'retrying');
    assert.equal(await f.deps.inbound.retryEvent(stored.id), 'dead');
    assert.equal(await f.deps.inbound.retryEvent(stored.id), 'not_pending');
    const dead = await f.database.handle.db.selectFrom('inbound_events').selectAll().where('id', '=', stored.id).executeTakeFirstOrThrow();
    assert.equal(dead.status, 'dead');
    assert.equal(dead.attempts, 3);
    assert.equal(await metric('invoiceiq_inbound_events_total', 'outcome="dead"'), deadBefore + 1);
  });

  test('a NUL character (U+0000) is dropped at the boundary: no crash, the rest of the payload is processed', async () => {
    const a = textMessage('254700000050', 'hi\u0000there');
    const b = textMessage('254700000051', 'hello');
    const res = await f.post(envelope({ messages: [a, b] }));
    assert.equal(res.status, 200);
    const stored = await f.database.handle.db.selectFrom('inbound_events').select(['external_key', 'status']).where('external_key', 'in', [a.id as string, b.id as string]).execute();
    assert.equal(stored.length, 2);
    assert.ok(stored.every((e) => e.status === 'processed'));
  });

  test('a webhook larger than the default body limit but under 3 MB is accepted', async () => {
    const from = '254700000040';
    const res = await f.post(inboundText(from, 'x'.repeat(200_000)));
    assert.equal(res.status, 200);
  });
});
