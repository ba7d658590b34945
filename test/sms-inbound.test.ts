/**
 * Text messages to the SMS number (POST /sms/inbound/<SMS_INBOUND_TOKEN>, src/inbound/sms-message.ts),
 * on both databases, with a fake Daraja on 127.0.0.1 and Africa's Talking intercepted: a
 * customer who never wrote on WhatsApp cancels the M-PESA prompt, is told by SMS to reply
 * PAY, replies PAY by SMS, and gets a new prompt and the answer by SMS. Each message id
 * applies once, also when delivered again or several times at once; the route is closed to
 * anyone without the secret URL, and bad bodies are refused without storing anything.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import type { FakeDaraja } from './fakes/daraja.js';
import { envelope, wamid } from './fixtures/whatsapp.js';
import { waitFor, type ChannelFixture } from './helpers/channel.js';
import { cancelNextPrompt, pushesTo, smsFrom, startSmsFixture } from './helpers/sms-inbound.js';

const INBOUND_TOKEN = 'sms-inbound-secret-0123456789abcdef';

let f: ChannelFixture;
let daraja: FakeDaraja;
before(async () => {
  ({ f, daraja } = await startSmsFixture(INBOUND_TOKEN));
});
after(async () => {
  await f.close();
  await daraja.close();
});
beforeEach(() => daraja.reset());

let seq = 0;
const say = (from: string, body: string) =>
  f.post(envelope({ messages: [{ from, id: wamid(), timestamp: String(Math.floor(Date.now() / 1000)), type: 'text', text: { body } }] }));

/** Africa's Talking's incoming-message callback (form-encoded, as it sends it). */
function incoming(fields: Record<string, string>, token = INBOUND_TOKEN, contentType = 'application/x-www-form-urlencoded'): Promise<Response> {
  const body = contentType.includes('json') ? JSON.stringify(fields) : new URLSearchParams(fields).toString();
  return Promise.resolve(f.app.request(`/sms/inbound/${token}`, { method: 'POST', headers: { 'content-type': contentType }, body }));
}
const smsFromCustomer = (customer: string, text: string, id = `ATXid_in_${(seq += 1)}`) => smsFrom(customer, text, id);
const pushes = (customer: string) => pushesTo(daraja, customer);
const smsTo = (customer: string) => f.sms.filter((m) => m.to === `+${customer}`).map((m) => m.message);
const inboundSms = async () => (await f.database.handle.db.selectFrom('inbound_events').select(['external_key', 'status']).where('source', '=', 'sms_message').execute());

/**
 * A merchant sends an invoice to a customer who is not on WhatsApp's window (it goes by SMS);
 * the customer cancels the prompt: the customer is told by SMS to reply PAY.
 */
async function cancelledPrompt() {
  seq += 1;
  const merchant = `2547221900${String(seq).padStart(2, '0')}`;
  const customer = `2547331900${String(seq).padStart(2, '0')}`;
  await say(merchant, 'hi');
  await say(merchant, 'Duka');
  await say(merchant, `invoice ${customer} 1500 flour`);
  await say(merchant, 'yes');
  const invoice = await f.database.handle.db.selectFrom('invoices').select(['id', 'number']).where('customer_phone', '=', customer).executeTakeFirstOrThrow();
  await cancelNextPrompt(f, daraja, customer, invoice.id, 0);
  return { merchant, customer, invoice };
}

describe('a customer replies PAY by SMS', () => {
  test('the SMS that says "reply PAY" is answered: a new M-PESA prompt, and the answer by SMS; the WhatsApp window stays closed', async () => {
    const s = await cancelledPrompt();
    assert.ok(smsTo(s.customer).some((m) => /not completed/i.test(m) && /reply PAY/i.test(m)), `the customer was told by SMS to reply PAY: ${JSON.stringify(smsTo(s.customer))}`);
    const before = smsTo(s.customer).length;

    const res = await incoming(smsFromCustomer(s.customer, ' pay '));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'processed' });
    await waitFor(() => pushes(s.customer).length === 2, 10_000, 'a second stk push');
    assert.equal(pushes(s.customer)[1]!.body.Amount, 1500);
    await f.deps.outbox.idle();
    const answers = smsTo(s.customer).slice(before);
    assert.equal(answers.length, 1, `one answer by SMS: ${JSON.stringify(answers)}`);
    assert.match(answers[0]!, /M-PESA PIN/);
    const conversation = await f.database.handle.db.selectFrom('conversations').select('last_inbound_at').where('phone', '=', s.customer).executeTakeFirstOrThrow();
    assert.equal(conversation.last_inbound_at, null, 'an SMS does not open the WhatsApp window');
  });

  test('the same message delivered again, or five times at once, starts one prompt and gets one answer', async () => {
    const s = await cancelledPrompt();
    const before = smsTo(s.customer).length;
    const message = smsFromCustomer(s.customer, 'PAY');
    const statuses = await Promise.all(Array.from({ length: 5 }, async () => (await (await incoming(message)).json()) as { status: string }));
    assert.deepEqual(statuses.map((r) => r.status).sort(), ['duplicate', 'duplicate', 'duplicate', 'duplicate', 'processed']);
    assert.deepEqual(await (await incoming(message)).json(), { status: 'duplicate' });
    await waitFor(() => pushes(s.customer).length === 2, 10_000, 'the second stk push');
    await f.deps.outbox.idle();
    assert.equal(pushes(s.customer).length, 2, 'one new prompt');
    assert.equal(smsTo(s.customer).length - before, 1, 'one answer');
  });

  test('JSON bodies are read too; a text from a number that is not a Kenyan mobile is kept and answers nobody', async () => {
    const res = await incoming({ id: 'ATXid_foreign_1', from: '+15555550100', text: 'PAY', date: '2026-12-02 07:30:00' }, INBOUND_TOKEN, 'application/json');
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'processed' });
    assert.ok((await inboundSms()).some((e) => e.external_key === 'ATXid_foreign_1' && e.status === 'processed'));
    await f.deps.outbox.idle();
    assert.equal(f.sms.filter((m) => m.to.includes('5555550100')).length, 0);
  });
});

describe('the route is closed to anyone without the secret URL, and refuses bad bodies', () => {
  test('a wrong token is a 404 like an unknown route, stores and sends nothing, and the token is not logged', async () => {
    const before = (await inboundSms()).length;
    const smsBefore = f.sms.length;
    const wrong = 'sms-inbound-secret-0123456789abcdeX';
    const res = await incoming(smsFromCustomer('254733199999', 'PAY'), wrong);
    assert.equal(res.status, 404);
    assert.equal((await inboundSms()).length, before);
    await f.deps.outbox.idle();
    assert.equal(f.sms.length, smsBefore);
    assert.equal(daraja.pushes().length, 0);
    assert.ok(!f.logs.text().includes(wrong), 'the offered token reached the logs');
    assert.ok(!f.logs.text().includes(INBOUND_TOKEN), 'the secret reached the logs');
    assert.ok(f.logs.lines.some((l) => /incoming SMS refused/.test(l.message)));
  });

  test('a body without the message fields is a 422, and another media type a 415; nothing is stored', async () => {
    const before = (await inboundSms()).length;
    const missing = await incoming({ from: '+254733100001', text: 'PAY' });
    assert.equal(missing.status, 422);
    const xml = await Promise.resolve(f.app.request(`/sms/inbound/${INBOUND_TOKEN}`, { method: 'POST', headers: { 'content-type': 'text/xml' }, body: '<sms/>' }));
    assert.equal(xml.status, 415);
    assert.equal((await inboundSms()).length, before);
  });
});
