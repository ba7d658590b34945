/**
 * Inbound WhatsApp edges found in review (each test failed on the code before its fix): a lone
 * UTF-16 surrogate or a deeply nested body crashed the route with a 500 and nothing stored
 * (Meta retries for days); an impossible timestamp went to retries until dead; one wamid from
 * two senders in one group was applied twice. Real route, real conversation, fake Graph API,
 * both databases.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DeliveryReport } from '../src/inbound/sms-report.js';
import { envelope, signed, textMessage, wamid } from './fixtures/whatsapp.js';
import { channelSuite, type ChannelFixture } from './helpers/channel.js';

let f: ChannelFixture;
channelSuite({ env: { DELIVERY_SAFETY_NET_SECONDS: '3600' } }, (started) => (f = started));

let next = 500;
const phone = () => `2547022${String((next += 1)).padStart(5, '0')}`;

async function event(key: string) {
  return f.database.handle.db.selectFrom('inbound_events').select(['status', 'source', 'last_error']).where('external_key', '=', key).executeTakeFirst();
}

async function rejectedCount(): Promise<number> {
  const row = await f.database.handle.db
    .selectFrom('inbound_events')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('source', '=', 'whatsapp_payload')
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** The last error the app logged (to say why a request failed). */
function lastError(): string {
  const line = f.logs.lines.filter((l) => (l.level === 'error' || l.level === 'warn') && ('error' in l || 'reason' in l)).at(-1);
  return line === undefined ? 'none' : JSON.stringify(line).slice(0, 400);
}

/** Signs exactly these bytes (the JSON text is written by hand, as Meta may write it). */
function postRaw(body: string): Promise<Response> {
  const s = signed(body);
  return Promise.resolve(f.app.request('/whatsapp/webhook', { method: 'POST', body: s.body, headers: s.headers }));
}

describe('odd payloads are stored, never a 500 that Meta retries for days', () => {
  test('a text message carrying a lone UTF-16 surrogate (\\ud800) is answered 200 and recorded', async () => {
    const from = phone();
    const id = wamid();
    // Valid JSON, valid against the schema; the escape is what a client bug or a forger could put in a body.
    const body = JSON.stringify(envelope({ messages: [textMessage(from, 'PLACEHOLDER', id)] })).replace('PLACEHOLDER', 'hi \\ud800 there');
    const res = await postRaw(body);
    assert.equal(res.status, 200, `a signed, schema-valid event is acknowledged; got ${res.status}, last error: ${lastError()}`);
    const stored = await event(id);
    assert.ok(stored !== undefined, 'the message is recorded under its wamid (processed, or kept for a retry)');
  });

  test('a signed payload that fails the schema and carries a lone surrogate is stored as rejected (200)', async () => {
    const before = await rejectedCount();
    const body = '{"object":"whatsapp_business_account","entry":[{"id":"W","changes":[{"field":"messages","value":{"messages":[{"id":"x","type":"text","note":"\\udc00"}]}}]}]}';
    const res = await postRaw(body);
    assert.equal(res.status, 200, `answered ${res.status}; last error: ${lastError()}`);
    assert.equal(await rejectedCount(), before + 1, 'stored as rejected');
  });

  test('a signed non-JSON body whose 100,000th character splits an emoji is stored as rejected (200)', async () => {
    const before = await rejectedCount();
    // storeRejected keeps the first 100,000 UTF-16 units: the cut falls between the two halves of the emoji.
    const body = `not json ${'x'.repeat(100_000 - 10)}\u{1F600} tail`;
    const res = await postRaw(body);
    assert.equal(res.status, 200, `answered ${res.status}; last error: ${lastError()}`);
    assert.equal(await rejectedCount(), before + 1, 'stored as rejected');
  });

  test('a message with a deeply nested extra field (well under 3 MB) is answered 200 and recorded', async () => {
    const from = phone();
    const id = wamid();
    const depth = 20_000; // 40 KB of brackets
    const body = JSON.stringify(envelope({ messages: [{ ...textMessage(from, 'hi', id), referral: 'DEEP' }] })).replace('"DEEP"', '['.repeat(depth) + ']'.repeat(depth));
    assert.ok(Buffer.byteLength(body) < 3 * 1024 * 1024);
    const res = await postRaw(body);
    assert.equal(res.status, 200, `answered ${res.status}, not 200; last error: ${lastError()}`);
    const recorded = (await event(id)) !== undefined || (await rejectedCount()) > 0;
    assert.ok(recorded, 'something is stored for it');
  });

  test('a deeply nested payload that fails the schema is stored as rejected (200), not a 500', async () => {
    const before = await rejectedCount();
    const depth = 20_000;
    const body = `{"object":"whatsapp_business_account","entry":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    const res = await postRaw(body);
    assert.equal(res.status, 200, `answered ${res.status}; last error: ${lastError()}`);
    assert.equal(await rejectedCount(), before + 1, 'stored as rejected');
  });

  test('a timestamp no Date can hold ("99999999999999999999") is refused by the schema, not retried until dead', async () => {
    const from = phone();
    const id = wamid();
    const message = { ...textMessage(from, 'hi', id), timestamp: '99999999999999999999' };
    const before = await rejectedCount();
    const res = await f.post(envelope({ messages: [message] }));
    assert.equal(res.status, 200, `answered ${res.status}; last error: ${lastError()}`);
    const stored = await event(id);
    // Either the payload is refused as rejected, or the message is applied; "retrying" can only end as "dead".
    assert.ok(
      (stored === undefined && (await rejectedCount()) === before + 1) || stored?.status === 'processed',
      `got ${JSON.stringify(stored)}: a payload no retry can fix is queued for retries`,
    );
  });
});

describe('exactly once', () => {
  test('one wamid twice in one POST (from two senders) has one effect, not two', async () => {
    const [a, b] = [phone(), phone()];
    const id = wamid();
    const res = await f.post(envelope({ messages: [textMessage(a, 'hi', id), textMessage(b, 'hi', id)] }));
    assert.equal(res.status, 200, `answered ${res.status}; last error: ${lastError()}`);
    const events = await f.database.handle.db.selectFrom('inbound_events').select('id').where('external_key', '=', id).execute();
    assert.equal(events.length, 1, 'one event row');
    await f.deps.outbox.idle();
    const replies = await f.database.handle.db.selectFrom('outbound_messages').select('recipient').where('recipient', 'in', [a, b]).execute();
    assert.equal(replies.length, 1, `one effect for one wamid, got replies to ${replies.map((r) => r.recipient).join(', ')}`);
  });
});

test('an SMS delivery report in JSON with numeric networkCode and retryCount reads (it was a 422, and the status was lost)', () => {
  const parsed = DeliveryReport.safeParse({ id: 'ATXid_1', status: 'Success', phoneNumber: '+254712345678', networkCode: 63902, retryCount: 0 });
  assert.ok(parsed.success, JSON.stringify(parsed.error?.issues));
  assert.equal(parsed.data.networkCode, '63902');
  assert.equal(parsed.data.retryCount, '0');
  assert.equal(DeliveryReport.safeParse({ id: 'ATXid_1', status: 'Success', retryCount: { x: 1 } }).success, false);
});
