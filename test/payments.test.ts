/**
 * M-PESA payments end to end, on both databases: invoice -> STK push to a fake Daraja on
 * 127.0.0.1 -> Safaricom-shaped callbacks to the real route -> paid once, receipts once;
 * forged and doubled callbacks, amount mismatches, failures, the 2-minute rule,
 * reconciliation and once-only reminders.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { texts } from '../src/domain/texts.js';
import { clientAddress, proxyTrust } from '../src/http/client-address.js';
import { createPayments } from '../src/payments/service.js';
import type { DarajaClient } from '../src/providers/mpesa/client.js';
import { callbackBody, startFakeDaraja, type FakeDaraja } from './fakes/daraja.js';
import { envelope, wamid } from './fixtures/whatsapp.js';
import { buildTestApp } from './helpers/app.js';
import { startChannelFixture, waitFor, type ChannelFixture } from './helpers/channel.js';

const KEY = 'consumer-key-test';
const SECRET = 'consumer-secret-test';
const SHORTCODE = '174379';
const PASSKEY = 'bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919';
const CALLBACK_BASE = 'https://invoiceiq.example/payments/stk/callback';

let clock = new Date('2026-11-22T07:00:00.000Z').getTime();
const now = () => new Date(clock);

let f: ChannelFixture;
let daraja: FakeDaraja;
before(async () => {
  daraja = await startFakeDaraja({ consumerKey: KEY, consumerSecret: SECRET });
  f = await startChannelFixture({
    now,
    env: {
      DELIVERY_SAFETY_NET_SECONDS: '3600',
      MPESA_CONSUMER_KEY: KEY,
      MPESA_CONSUMER_SECRET: SECRET,
      MPESA_SHORTCODE: SHORTCODE,
      MPESA_PASSKEY: PASSKEY,
      MPESA_CALLBACK_URL: CALLBACK_BASE,
      MPESA_API_BASE_URL: daraja.baseUrl,
      MPESA_TIMEOUT_MS: '2000',
    },
  });
});
after(async () => {
  await f.close();
  await daraja.close();
});
beforeEach(() => {
  daraja.reset();
});

let phoneSeq = 0;
function phones() {
  phoneSeq += 1;
  return { merchant: `2547220100${String(phoneSeq).padStart(2, '0')}`, customer: `2547330100${String(phoneSeq).padStart(2, '0')}` };
}
function say(from: string, body: string) {
  return f.post(envelope({ messages: [{ from, id: wamid(), timestamp: String(Math.floor(clock / 1000)), type: 'text', text: { body } }] }));
}
function callback(token: string, body: unknown) {
  return f.app.request(`/payments/stk/callback/${token}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

/** A new merchant sends one invoice on WhatsApp (its STK push is then on its way). */
async function sendInvoice(amount = 1500) {
  const p = phones();
  await say(p.merchant, 'hi');
  await say(p.merchant, 'Duka');
  await say(p.merchant, `invoice ${p.customer} ${amount} flour`);
  await say(p.merchant, 'yes');
  const invoice = await f.database.handle.db
    .selectFrom('invoices')
    .innerJoin('merchants', 'merchants.id', 'invoices.merchant_id')
    .select(['invoices.id', 'invoices.number'])
    .where('merchants.phone', '=', p.merchant)
    .executeTakeFirstOrThrow();
  return { ...p, invoice };
}

/** The callback token Daraja was given in a recorded push's CallBackURL. */
const tokenOf = (push: { body: Record<string, unknown> }) => String(push.body.CallBackURL).slice(CALLBACK_BASE.length + 1);

/** A registered merchant with one sent invoice whose STK push reached the fake Daraja. */
async function invoiceWithPush(amount = 1500) {
  const { invoice, ...p } = await sendInvoice(amount);
  await waitFor(() => daraja.pushes().some((r) => r.body.PhoneNumber === p.customer), 10_000, 'stk push');
  const pushRequest = daraja.pushes().find((r) => r.body.PhoneNumber === p.customer)!;
  const token = tokenOf(pushRequest);
  await waitFor(async () => (await attemptsOf(invoice.id)).some((a) => a.checkout_request_id !== null), 5_000, 'checkout id stored');
  const [attempt] = await attemptsOf(invoice.id);
  return { ...p, invoice, token, push: pushRequest, checkoutRequestId: attempt!.checkout_request_id!, merchantRequestId: attempt!.merchant_request_id! };
}
/** The fake answers queries in order, whoever asks: leave only this invoice's attempts pending. */
async function onlyPending(invoiceId: string) {
  await f.database.handle.db.updateTable('payment_attempts').set({ status: 'failed' }).where('status', '=', 'pending').where('invoice_id', '<>', invoiceId).execute();
}
async function attemptsOf(invoiceId: string) {
  return f.database.handle.db.selectFrom('payment_attempts').selectAll().where('invoice_id', '=', invoiceId).orderBy('created_at').execute();
}
async function invoiceRow(id: string) {
  return f.database.handle.db.selectFrom('invoices').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
}
async function kindsTo(phone: string) {
  return (await f.database.handle.db.selectFrom('outbound_messages').select('kind').where('recipient', '=', phone).orderBy('created_at').execute()).map((r) => r.kind);
}
async function events(invoiceId: string, type: string) {
  return (await f.database.handle.db.selectFrom('invoice_events').select('type').where('invoice_id', '=', invoiceId).where('type', '=', type).execute()).length;
}
const success = (s: { checkoutRequestId: string; merchantRequestId: string; customer: string }, amount = 1500, receipt = 'NLJ7RT61SV') =>
  callbackBody({ checkoutRequestId: s.checkoutRequestId, merchantRequestId: s.merchantRequestId, resultCode: 0, resultDesc: 'The service request is processed successfully.', amount, receipt, phone: s.customer });

describe('the STK push', () => {
  test('sending an invoice pushes a prompt with the right fields and an unguessable callback token', async () => {
    const s = await invoiceWithPush();
    const body = s.push.body;
    assert.equal(body.BusinessShortCode, SHORTCODE);
    assert.equal(body.TransactionType, 'CustomerPayBillOnline');
    assert.equal(body.Amount, 1500);
    assert.equal(body.PartyA, s.customer);
    assert.equal(body.PartyB, SHORTCODE);
    assert.equal(body.AccountReference, 'INV-0001');
    assert.ok(String(body.TransactionDesc).length <= 13);
    assert.equal(Buffer.from(String(body.Password), 'base64').toString(), `${SHORTCODE}${PASSKEY}${String(body.Timestamp)}`);
    assert.match(s.token, /^[A-Za-z0-9_-]{40,}$/);
    const [attempt] = await attemptsOf(s.invoice.id);
    assert.notEqual(attempt!.callback_token_hash, s.token, 'only a hash of the token is stored');
    assert.equal(attempt!.status, 'pending');
    assert.ok(!JSON.stringify(await f.database.handle.db.selectFrom('payment_attempts').selectAll().execute()).includes(s.token));
  });
});

describe('callbacks', () => {
  test('a genuine success marks the invoice paid and sends one receipt to each side', async () => {
    const s = await invoiceWithPush();
    const res = await callback(s.token, success(s));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ResultCode: 0, ResultDesc: 'Accepted' });
    const invoice = await invoiceRow(s.invoice.id);
    assert.equal(invoice.status, 'paid');
    assert.equal(invoice.mpesa_receipt, 'NLJ7RT61SV');
    assert.deepEqual((await kindsTo(s.customer)).filter((k) => k === 'receipt'), ['receipt']);
    assert.deepEqual((await kindsTo(s.merchant)).filter((k) => k === 'receipt'), ['receipt']);
  });

  test('the same callback twice, then twenty times at once: one paid transition, one receipt each', async () => {
    const s = await invoiceWithPush();
    await callback(s.token, success(s, 1500, 'RCPTDUP001'));
    await callback(s.token, success(s, 1500, 'RCPTDUP001'));
    const answers = await Promise.all(Array.from({ length: 20 }, () => callback(s.token, success(s, 1500, 'RCPTDUP001'))));
    assert.ok(answers.every((r) => r.status === 200));
    assert.equal(await events(s.invoice.id, 'paid'), 1);
    assert.equal((await kindsTo(s.customer)).filter((k) => k === 'receipt').length, 1);
    assert.equal((await kindsTo(s.merchant)).filter((k) => k === 'receipt').length, 1);
  });

  test('a forged callback (unknown token, or another CheckoutRequestID) gets a 4xx and changes nothing', async () => {
    const s = await invoiceWithPush();
    const forged = await callback('not-the-token-at-all-0000000000000000000000', success(s));
    assert.equal(forged.status, 404);
    const mismatch = await callback(s.token, success({ ...s, checkoutRequestId: 'ws_CO_someone_else' }));
    assert.equal(mismatch.status, 403);
    // Unreadable with a forged token: refused as forged. (With the attempt's own token it is
    // stored for a person and accepted: test/payments-second-review.test.ts.)
    const malformed = await callback('not-the-token-at-all-0000000000000000000000', { Body: {} });
    assert.equal(malformed.status, 404);
    assert.equal((await invoiceRow(s.invoice.id)).status, 'sent');
    assert.equal((await attemptsOf(s.invoice.id))[0]!.status, 'pending');
    const metrics = await f.deps.metrics.registry.metrics();
    assert.match(metrics, /invoiceiq_mpesa_callbacks_rejected_total\{reason="unknown_token"\} [1-9]/);
    assert.match(metrics, /invoiceiq_mpesa_callbacks_rejected_total\{reason="checkout_mismatch"\} [1-9]/);
  });

  test('a success for another amount is recorded for review, the merchant told, the invoice not paid', async () => {
    const s = await invoiceWithPush();
    const res = await callback(s.token, success(s, 15));
    assert.equal(res.status, 200);
    assert.equal((await invoiceRow(s.invoice.id)).status, 'sent');
    const [attempt] = await attemptsOf(s.invoice.id);
    assert.match(attempt!.review_reason ?? '', /amount_mismatch/);
    assert.equal(await events(s.invoice.id, 'payment_needs_review'), 1);
    assert.ok((await kindsTo(s.merchant)).includes('notice'));
  });

  test('a failure (1032) ends the attempt and tells both sides; a late failure never overwrites a success', async () => {
    const s = await invoiceWithPush();
    const failed = callbackBody({ checkoutRequestId: s.checkoutRequestId, merchantRequestId: s.merchantRequestId, resultCode: 1032, resultDesc: 'Request cancelled by user' });
    assert.equal((await callback(s.token, failed)).status, 200);
    const [attempt] = await attemptsOf(s.invoice.id);
    assert.equal(attempt!.status, 'failed');
    assert.equal(attempt!.result_code, 1032);
    assert.ok((await kindsTo(s.customer)).includes('notice'));
    assert.ok((await kindsTo(s.merchant)).includes('notice'));

    // The money moved after all (a success for the same attempt): it counts.
    assert.equal((await callback(s.token, success(s, 1500, 'RCPTLATE01'))).status, 200);
    assert.equal((await invoiceRow(s.invoice.id)).status, 'paid');
    // A late failure now changes nothing.
    await callback(s.token, failed);
    assert.equal((await attemptsOf(s.invoice.id))[0]!.status, 'succeeded');
    assert.equal((await invoiceRow(s.invoice.id)).status, 'paid');
  });
});

describe('every result code', () => {
  const codes: Array<[number, string]> = [
    [1, 'insufficient_funds'],
    [2, 'limit'],
    [3, 'limit'],
    [4, 'limit'],
    [8, 'limit'],
    [17, 'other'],
    [1019, 'expired'],
    [1025, 'other'],
    [1032, 'cancelled'],
    [1037, 'unreachable'],
    [2001, 'wrong_pin'],
  ];
  test('each failure code fails the attempt, keeps the invoice unpaid and gives the merchant its reason', async () => {
    for (const [code, reason] of codes) {
      const s = await invoiceWithPush();
      const body = callbackBody({ checkoutRequestId: s.checkoutRequestId, merchantRequestId: s.merchantRequestId, resultCode: code, resultDesc: `code ${code}` });
      assert.equal((await callback(s.token, body)).status, 200, `code ${code}`);
      const [attempt] = await attemptsOf(s.invoice.id);
      assert.equal(attempt!.status, 'failed');
      assert.equal(attempt!.result_code, code);
      assert.equal((await invoiceRow(s.invoice.id)).status, 'sent');
      const toMerchant = await f.database.handle.db
        .selectFrom('outbound_messages')
        .select('content')
        .where('recipient', '=', s.merchant)
        .where('kind', '=', 'notice')
        .executeTakeFirstOrThrow();
      const expected = texts.en.paymentFailedToMerchant(s.invoice.number, reason as Parameters<typeof texts.en.paymentFailedToMerchant>[1]);
      assert.deepEqual((toMerchant.content as { message: unknown }).message, expected, `reason for ${code}`);
    }
  });

  test('a callback without a token in the URL is a 404', async () => {
    const res = await f.app.request('/payments/stk/callback', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(res.status, 404);
  });
});

describe('the whole story', () => {
  test('invoice on WhatsApp -> STK push -> callback -> receipts to both -> status shows paid', async () => {
    const s = await invoiceWithPush(2500);
    assert.deepEqual((await kindsTo(s.customer)).slice(0, 1), ['invoice']);
    assert.equal((await callback(s.token, success(s, 2500, 'RCPTSTORY1'))).status, 200);
    assert.ok((await kindsTo(s.customer)).includes('receipt'));
    assert.ok((await kindsTo(s.merchant)).includes('receipt'));
    await say(s.merchant, `status ${s.invoice.number}`);
    const last = await f.database.handle.db
      .selectFrom('outbound_messages')
      .select('content')
      .where('recipient', '=', s.merchant)
      .orderBy('created_at', 'desc')
      .limit(1)
      .executeTakeFirstOrThrow();
    const body = JSON.stringify(last.content);
    assert.match(body, /RCPTSTORY1/);
    assert.match(body, /[Pp]aid/);
    await f.deps.outbox.idle();
    assert.ok(f.sms.some((m) => m.to === `+${s.customer}` && /RCPTSTORY1/.test(m.message)), 'the customer (never wrote on WhatsApp) gets the receipt by SMS');
  });
});

describe('review findings', () => {
  test('a bare 5xx on the push keeps the token: the callback of a prompt that did reach the phone still pays', async () => {
    daraja.queuePush({ kind: 'raw', status: 502, body: 'Bad gateway' });
    const { invoice, ...p } = await sendInvoice();
    await waitFor(async () => (await attemptsOf(invoice.id))[0]?.status === 'failed', 10_000, 'push ended');
    assert.equal(daraja.pushes().filter((r) => r.body.PhoneNumber === p.customer).length, 1, 'not pushed again');
    const token = tokenOf(daraja.pushes().find((r) => r.body.PhoneNumber === p.customer)!);
    const res = await callback(token, success({ checkoutRequestId: 'ws_CO_reached_anyway', merchantRequestId: 'mr', customer: p.customer }, 1500, 'RCPT502OK1'));
    assert.equal(res.status, 200);
    assert.equal((await invoiceRow(invoice.id)).status, 'paid');
  });

  test('a push waiting for a retry is not sent once the invoice is cancelled', async () => {
    daraja.queuePush({ kind: 'error', status: 500, code: '500.003.02', message: 'Spike arrest' });
    const { invoice, ...p } = await sendInvoice();
    await waitFor(() => daraja.pushes().some((r) => r.body.PhoneNumber === p.customer), 10_000, 'first push refused');
    await waitFor(async () => (await attemptsOf(invoice.id))[0]?.push_started_at === null, 5_000, 'released for a retry');
    await say(p.merchant, `cancel ${invoice.number}`);
    const [attempt] = await attemptsOf(invoice.id);
    assert.equal(attempt!.status, 'expired');
    assert.equal(await f.deps.payments.push(attempt!.id), 'not_pending');
    assert.equal(daraja.pushes().filter((r) => r.body.PhoneNumber === p.customer).length, 1);
  });

  test('an invoice cancelled while its prompt was on the phone, then paid: paid, receipts to both, and the merchant told it had been cancelled', async () => {
    const s = await invoiceWithPush();
    await say(s.merchant, `cancel ${s.invoice.number}`);
    assert.equal((await invoiceRow(s.invoice.id)).status, 'cancelled');
    assert.equal((await callback(s.token, success(s, 1500, 'RCPTCANC01'))).status, 200);
    const invoice = await invoiceRow(s.invoice.id);
    assert.deepEqual([invoice.status, invoice.mpesa_receipt], ['paid', 'RCPTCANC01'], 'the money moved: it is paid');
    assert.equal((await kindsTo(s.customer)).filter((k) => k === 'receipt').length, 1);
    const receipts = await f.database.handle.db.selectFrom('outbound_messages').select('content').where('recipient', '=', s.merchant).where('kind', '=', 'receipt').execute();
    assert.equal(receipts.length, 1);
    assert.match(JSON.stringify(receipts[0]!.content), /You had cancelled this invoice.*refund one of the two payments/);
    const paid = await f.database.handle.db.selectFrom('invoice_events').select('data').where('invoice_id', '=', s.invoice.id).where('type', '=', 'paid').executeTakeFirstOrThrow();
    assert.match(JSON.stringify(paid.data), /was_cancelled/);
  });

  test('a success callback without an Amount is not trusted: review, not paid', async () => {
    const s = await invoiceWithPush();
    const body = callbackBody({ checkoutRequestId: s.checkoutRequestId, merchantRequestId: s.merchantRequestId, resultCode: 1032, resultDesc: 'x' });
    body.Body.stkCallback.ResultCode = 0;
    assert.equal((await callback(s.token, body)).status, 200);
    assert.equal((await invoiceRow(s.invoice.id)).status, 'sent');
    assert.match((await attemptsOf(s.invoice.id))[0]!.review_reason ?? '', /amount_missing/);
  });

  test('the same mismatched callback three times: one review, one notice', async () => {
    const s = await invoiceWithPush();
    for (let i = 0; i < 3; i += 1) await callback(s.token, success(s, 15, 'RCPTMISM01'));
    assert.equal(await events(s.invoice.id, 'payment_needs_review'), 1);
    assert.equal((await kindsTo(s.merchant)).filter((k) => k === 'notice').length, 1);
  });

  test('the callback token never reaches the logs', async () => {
    const s = await invoiceWithPush();
    await callback(s.token, success(s, 1500, 'RCPTLOGS01'));
    assert.ok(!f.logs.text().includes(s.token));
  });
});

describe('new prompts', () => {
  test('pay is refused while a prompt is under 2 minutes old and pending, then starts a new attempt', async () => {
    const s = await invoiceWithPush();
    await say(s.customer, 'pay');
    assert.equal((await attemptsOf(s.invoice.id)).length, 1, 'refused: the first prompt is still pending');
    clock += 2 * 60_000 + 1_000;
    await say(s.customer, 'pay');
    await waitFor(async () => (await attemptsOf(s.invoice.id)).length === 2);
    await waitFor(() => daraja.pushes().filter((r) => r.body.PhoneNumber === s.customer).length === 2, 10_000, 'second push');
  });

  test('a success after a failure of another attempt leaves exactly one paid transition', async () => {
    const s = await invoiceWithPush();
    const failed = callbackBody({ checkoutRequestId: s.checkoutRequestId, merchantRequestId: s.merchantRequestId, resultCode: 2001, resultDesc: 'wrong PIN' });
    await callback(s.token, failed);
    const [first] = await attemptsOf(s.invoice.id);
    await say(s.merchant, `remind ${s.invoice.number}`);
    await waitFor(() => daraja.pushes().filter((r) => r.body.PhoneNumber === s.customer).length === 2, 10_000, 'second push');
    const second = daraja.pushes().filter((r) => r.body.PhoneNumber === s.customer)[1]!;
    const token2 = tokenOf(second);
    // Both attempts were created at the same (test) clock time: the second is the other one, not the second by created_at.
    const secondAttempt = async () => (await attemptsOf(s.invoice.id)).find((a) => a.id !== first!.id);
    await waitFor(async () => (await secondAttempt())?.checkout_request_id != null);
    const attempt2 = (await secondAttempt())!;
    await callback(token2, success({ checkoutRequestId: attempt2.checkout_request_id!, merchantRequestId: attempt2.merchant_request_id!, customer: s.customer }, 1500, 'RCPTSECOND'));
    await callback(s.token, failed);
    assert.equal((await invoiceRow(s.invoice.id)).status, 'paid');
    assert.equal(await events(s.invoice.id, 'paid'), 1);
  });
});

/** An invoice whose customer asked to pay again after 2 minutes: two prompts, both pending. */
async function twoPrompts() {
  const s = await invoiceWithPush();
  clock += 2 * 60_000 + 1_000;
  await say(s.customer, 'pay');
  await waitFor(() => daraja.pushes().filter((r) => r.body.PhoneNumber === s.customer).length === 2, 10_000, 'second push');
  const token2 = tokenOf(daraja.pushes().filter((r) => r.body.PhoneNumber === s.customer)[1]!);
  await waitFor(async () => (await attemptsOf(s.invoice.id))[1]?.checkout_request_id != null);
  const attempt2 = (await attemptsOf(s.invoice.id))[1]!;
  return { s, token2, attempt2 };
}

describe('paid twice', () => {
  test('a customer who pays two prompts for one invoice: paid once, the second payment kept with its receipt for a refund', async () => {
    const { s, token2, attempt2 } = await twoPrompts();

    assert.equal((await callback(s.token, success(s, 1500, 'RCPTTWICE1'))).status, 200);
    const second = success({ checkoutRequestId: attempt2.checkout_request_id!, merchantRequestId: attempt2.merchant_request_id!, customer: s.customer }, 1500, 'RCPTTWICE2');
    assert.equal((await callback(token2, second)).status, 200, 'the second payment is accepted, not refused (Safaricom would not send it again)');
    assert.equal((await callback(token2, second)).status, 200);

    const invoice = await invoiceRow(s.invoice.id);
    assert.equal(invoice.status, 'paid');
    assert.equal(invoice.mpesa_receipt, 'RCPTTWICE1');
    const [first, again] = await attemptsOf(s.invoice.id);
    assert.equal(first!.status, 'succeeded');
    assert.equal(again!.status, 'failed');
    assert.equal(again!.mpesa_receipt, 'RCPTTWICE2', 'the money to refund can be found by its receipt');
    assert.match(again!.review_reason ?? '', /^paid_twice: receipt RCPTTWICE2$/);
    assert.equal(await events(s.invoice.id, 'paid'), 1);
    assert.equal(await events(s.invoice.id, 'duplicate_payment'), 1);
    assert.equal((await kindsTo(s.customer)).filter((k) => k === 'receipt').length, 1);
    const notices = await f.database.handle.db.selectFrom('outbound_messages').select('content').where('recipient', '=', s.merchant).where('kind', '=', 'notice').execute();
    assert.equal(notices.length, 1, 'the merchant is told once');
  });
});

describe('paid twice, learnt first from the STK query', () => {
  test('the query reports the second payment (no receipt yet); the late callback adds its receipt and tells nobody again', async () => {
    const { s, token2, attempt2 } = await twoPrompts();
    assert.equal((await callback(s.token, success(s, 1500, 'RCPTQRY001'))).status, 200);

    // Only the second attempt is pending: the fake answers the next query with a success.
    await f.database.handle.db.updateTable('payment_attempts').set({ status: 'failed' }).where('status', '=', 'pending').where('id', '<>', attempt2.id).execute();
    clock += 4 * 60_000;
    daraja.queueQuery({ kind: 'result', resultCode: '0', resultDesc: 'The service request is processed successfully.' });
    await f.deps.payments.reconcile();
    let again = (await attemptsOf(s.invoice.id))[1]!;
    assert.equal(again.status, 'failed');
    assert.equal(again.review_reason, 'paid_twice: receipt -');
    assert.match(again.result_desc ?? '', /^Paid twice: refund M-PESA/);

    const late = success({ checkoutRequestId: attempt2.checkout_request_id!, merchantRequestId: attempt2.merchant_request_id!, customer: s.customer }, 1500, 'RCPTQRY002');
    assert.equal((await callback(token2, late)).status, 200);
    again = (await attemptsOf(s.invoice.id))[1]!;
    assert.equal(again.mpesa_receipt, 'RCPTQRY002');
    assert.equal(again.review_reason, 'paid_twice: receipt RCPTQRY002');
    assert.equal(await events(s.invoice.id, 'duplicate_payment'), 1, 'reported once');
    const notices = await f.database.handle.db.selectFrom('outbound_messages').select('id').where('recipient', '=', s.merchant).where('kind', '=', 'notice').execute();
    assert.equal(notices.length, 1, 'the merchant is told once');
    assert.equal((await invoiceRow(s.invoice.id)).mpesa_receipt, 'RCPTQRY001');
  });
});

describe('reconciliation', () => {

  test('a lost callback is healed by the STK query through the same path; still-processing stays pending', async () => {
    const s = await invoiceWithPush();
    await onlyPending(s.invoice.id);
    clock += 4 * 60_000;
    daraja.queueQuery({ kind: 'pending' });
    await f.deps.payments.reconcile();
    assert.equal((await attemptsOf(s.invoice.id))[0]!.status, 'pending');
    // Asked again after its pause (a minute after the first query).
    clock += 60_000;
    daraja.queueQuery({ kind: 'result', resultCode: '0', resultDesc: 'The service request is processed successfully.' });
    const result = await f.deps.payments.reconcile();
    assert.ok(result.applied >= 1);
    assert.equal((await invoiceRow(s.invoice.id)).status, 'paid');
    assert.equal(await events(s.invoice.id, 'paid'), 1);
  });

  test('paid according to the query (no receipt), then the late callback: its receipt is added, nothing sent twice', async () => {
    const s = await invoiceWithPush();
    await onlyPending(s.invoice.id);
    clock += 4 * 60_000;
    daraja.queueQuery({ kind: 'result', resultCode: '0', resultDesc: 'The service request is processed successfully.' });
    await f.deps.payments.reconcile();
    assert.deepEqual(await invoiceRow(s.invoice.id).then((i) => [i.status, i.mpesa_receipt]), ['paid', null]);
    const receiptsBefore = (await kindsTo(s.customer)).filter((k) => k === 'receipt').length;

    assert.equal((await callback(s.token, success(s, 1500, 'RCPTLATE77'))).status, 200);
    assert.equal((await callback(s.token, success(s, 1500, 'RCPTLATE77'))).status, 200);
    assert.deepEqual(await invoiceRow(s.invoice.id).then((i) => [i.status, i.mpesa_receipt]), ['paid', 'RCPTLATE77']);
    assert.equal((await attemptsOf(s.invoice.id))[0]!.mpesa_receipt, 'RCPTLATE77');
    assert.equal(await events(s.invoice.id, 'paid'), 1);
    assert.equal(await events(s.invoice.id, 'receipt_added'), 1);
    assert.equal((await kindsTo(s.customer)).filter((k) => k === 'receipt').length, receiptsBefore, 'no second receipt');
  });

  test('a failure the query reports (it has said failed for payments that went through): the customer is told not to pay again if M-PESA confirmed it, the merchant to check the statement; a callback\'s failure is told plainly', async () => {
    const notices = async (phone: string) =>
      (await f.database.handle.db.selectFrom('outbound_messages').select('content').where('recipient', '=', phone).where('kind', '=', 'notice').orderBy('created_at').execute()).map((r) => JSON.stringify(r.content));
    const s = await invoiceWithPush();
    await onlyPending(s.invoice.id);
    clock += 4 * 60_000;
    daraja.queueQuery({ kind: 'result', resultCode: '1032', resultDesc: 'Request cancelled by user' });
    await f.deps.payments.reconcile();
    assert.equal((await attemptsOf(s.invoice.id))[0]!.status, 'failed');
    const [toCustomer] = await notices(s.customer);
    assert.match(toCustomer!, /M-PESA did not confirm your payment/);
    assert.match(toCustomer!, /do not pay again/);
    assert.match(toCustomer!, /reply PAY/);
    assert.match(toCustomer!, /unless M-PESA already confirmed it to you/, 'the SMS form says it too');
    const [toMerchant] = await notices(s.merchant);
    assert.match(toMerchant!, /check your M-PESA statement/);

    const t = await invoiceWithPush();
    const failed = callbackBody({ checkoutRequestId: t.checkoutRequestId, merchantRequestId: t.merchantRequestId, resultCode: 1032, resultDesc: 'Request cancelled by user' });
    assert.equal((await callback(t.token, failed)).status, 200);
    const [plain] = await notices(t.customer);
    assert.match(plain!, /was not completed/);
    assert.doesNotMatch(plain!, /do not pay again|unless M-PESA/);
    assert.doesNotMatch((await notices(t.merchant)).at(-1)!, /check your M-PESA statement/);
  });

  test('no answer for long enough expires the attempt; a query never overwrites a recorded success', async () => {
    const s = await invoiceWithPush();
    clock += 31 * 60_000;
    await f.deps.payments.reconcile();
    assert.equal((await attemptsOf(s.invoice.id))[0]!.status, 'expired');

    const t = await invoiceWithPush();
    await callback(t.token, success(t, 1500, 'RCPTKEEP01'));
    await onlyPending(t.invoice.id);
    clock += 4 * 60_000;
    daraja.queueQuery({ kind: 'result', resultCode: '1032', resultDesc: 'cancelled' });
    await f.deps.payments.reconcile();
    assert.equal((await attemptsOf(t.invoice.id))[0]!.status, 'succeeded');
    assert.equal((await invoiceRow(t.invoice.id)).status, 'paid');
  });
});

describe('reconciliation when M-PESA does not answer', () => {
  const unanswered = { kind: 'error', status: 503, code: '503.001.01', message: 'Service Unavailable' } as const;
  async function merchantNotices(merchant: string) {
    return f.database.handle.db.selectFrom('outbound_messages').select('content').where('recipient', '=', merchant).where('kind', '=', 'notice').execute();
  }

  test('queries nobody answers keep the attempt pending past 30 minutes (the money may have moved); the first answer then settles it', async () => {
    const s = await invoiceWithPush();
    await onlyPending(s.invoice.id);
    clock += 31 * 60_000;
    daraja.queueQuery(unanswered);
    await f.deps.payments.reconcile();
    assert.equal((await attemptsOf(s.invoice.id))[0]!.status, 'pending', 'not expired on an unanswered query');
    assert.equal((await merchantNotices(s.merchant)).length, 0, 'the merchant is not told it failed');

    clock += 2 * 60_000;
    daraja.queueQuery({ kind: 'result', resultCode: '0', resultDesc: 'The service request is processed successfully.' });
    await f.deps.payments.reconcile();
    assert.equal((await attemptsOf(s.invoice.id))[0]!.status, 'succeeded');
    assert.equal((await invoiceRow(s.invoice.id)).status, 'paid');
  });

  test('a day with no query answered: the attempt expires and the merchant is told to check their M-PESA messages', async () => {
    const s = await invoiceWithPush();
    await onlyPending(s.invoice.id);
    clock += 25 * 3600_000;
    daraja.queueQuery(unanswered);
    const result = await f.deps.payments.reconcile();
    assert.equal(result.expired, 1);
    const [attempt] = await attemptsOf(s.invoice.id);
    assert.equal(attempt!.status, 'expired');
    assert.match(attempt!.result_desc ?? '', /never answered/);
    const notices = await merchantNotices(s.merchant);
    assert.equal(notices.length, 1);
    assert.match(JSON.stringify(notices[0]!.content), /check your M-PESA messages/);
    assert.equal((await invoiceRow(s.invoice.id)).status, 'sent', 'still payable');
  });

  test('an attempt still pending is asked again after 1, 2, 4 minutes, not on every run', async () => {
    const s = await invoiceWithPush();
    await onlyPending(s.invoice.id);
    const asked = () => daraja.queries().filter((r) => r.body.CheckoutRequestID === s.checkoutRequestId).length;
    clock += 4 * 60_000;
    const seen: number[] = [];
    // Runs (two at a time) every minute for 8 minutes; Daraja says "still being processed".
    for (let minute = 0; minute < 8; minute += 1) {
      await f.deps.payments.reconcile();
      await f.deps.payments.reconcile();
      seen.push(asked());
      clock += 60_000;
    }
    // Asked at minutes 0, 1 (after 1), 3 (after 2), 7 (after 4).
    assert.deepEqual(seen, [1, 2, 2, 3, 3, 3, 3, 4]);
  });

  test('more than a page of unanswered attempts: every due one is asked in one run, so none waits behind the others', async () => {
    const s = await invoiceWithPush();
    await onlyPending(s.invoice.id);
    // 60 older attempts of the same invoice, pending, never asked (as after an outage).
    const older = new Date(clock - 20 * 60_000);
    await f.database.handle.db
      .insertInto('payment_attempts')
      .values(
        Array.from({ length: 60 }, (_, i) => ({
          invoice_id: s.invoice.id,
          checkout_request_id: `ws_CO_starve_${i}_${clock}`,
          amount: '1500',
          phone: s.customer,
          callback_token_hash: `starve-${i}-${clock}`,
          push_started_at: older,
          created_at: older,
        })),
      )
      .execute();
    clock += 4 * 60_000;
    const before = daraja.queries().length;
    await f.deps.payments.reconcile();
    assert.equal(daraja.queries().length - before, 61, 'all 61 asked in one run (a page is 50)');
    const notAsked = await f.database.handle.db.selectFrom('payment_attempts').select('id').where('status', '=', 'pending').where('last_queried_at', 'is', null).execute();
    assert.equal(notAsked.length, 0);
    await f.database.handle.db.updateTable('payment_attempts').set({ status: 'failed' }).where('checkout_request_id', 'like', 'ws_CO_starve_%').execute();
  });
});

describe('reminders', () => {
  test('due tomorrow and due today: each reminder once, even when run concurrently', async () => {
    const s = await invoiceWithPush();
    const day = (offsetDays: number) => new Date(clock + 3 * 3600_000 + offsetDays * 86_400_000).toISOString().slice(0, 10);
    await f.database.handle.db.updateTable('invoices').set({ due_date: day(1) }).where('id', '=', s.invoice.id).execute();
    await Promise.all([f.deps.payments.sendReminders(), f.deps.payments.sendReminders(), f.deps.payments.sendReminders()]);
    await f.deps.payments.sendReminders();
    await f.database.handle.db.updateTable('invoices').set({ due_date: day(0) }).where('id', '=', s.invoice.id).execute();
    await f.deps.payments.sendReminders();
    await f.deps.payments.sendReminders();
    const sent = await f.database.handle.db.selectFrom('invoice_reminders').select('kind').where('invoice_id', '=', s.invoice.id).orderBy('kind').execute();
    assert.deepEqual(sent.map((r) => r.kind), ['due_today', 'due_tomorrow']);
    assert.equal((await kindsTo(s.customer)).filter((k) => k === 'reminder').length, 2);
  });

  test('two workers (two app instances on one database) send each reminder once', async () => {
    const s = await invoiceWithPush();
    const tomorrow = new Date(clock + 3 * 3600_000 + 86_400_000).toISOString().slice(0, 10);
    await f.database.handle.db.updateTable('invoices').set({ due_date: tomorrow }).where('id', '=', s.invoice.id).execute();
    const second = buildTestApp(f.database, { now });
    await Promise.all([f.deps.payments.sendReminders(), second.deps.payments.sendReminders(), f.deps.payments.sendReminders(), second.deps.payments.sendReminders()]);
    assert.equal((await kindsTo(s.customer)).filter((k) => k === 'reminder').length, 1);
  });

  test('paid invoices get no reminder', async () => {
    const s = await invoiceWithPush();
    await callback(s.token, success(s, 1500, 'RCPTNOREM1'));
    const tomorrow = new Date(clock + 3 * 3600_000 + 86_400_000).toISOString().slice(0, 10);
    await f.database.handle.db.updateTable('invoices').set({ due_date: tomorrow }).where('id', '=', s.invoice.id).execute();
    await f.deps.payments.sendReminders();
    assert.equal((await kindsTo(s.customer)).filter((k) => k === 'reminder').length, 0);
  });
});

describe('review: a wrong-amount callback after a payment learnt from the STK query', () => {
  /** The fake answers queries in order, whoever asks: leave only this invoice's attempts pending. */
  /** A second Payments over the same database (a second worker), with its own Daraja client. */
  function worker(client: DarajaClient) {
    return createPayments({ db: f.database.handle.db, jobs: f.deps.jobs, outbox: f.deps.outbox, daraja: client, config: f.deps.config, metrics: f.deps.metrics, logger: f.deps.logger, now });
  }

  test('the late callback for another amount is not taken as the receipt: it goes to review', async () => {
    const s = await invoiceWithPush(1500);
    await onlyPending(s.invoice.id);
    clock += 4 * 60_000;
    daraja.queueQuery({ kind: 'result', resultCode: '0', resultDesc: 'The service request is processed successfully.' });
    await f.deps.payments.reconcile();
    assert.equal((await invoiceRow(s.invoice.id)).status, 'paid');
    const noticesBefore = (await kindsTo(s.merchant)).filter((k) => k === 'notice').length;

    // Safaricom's callback then says only KES 15 moved, under receipt RCPTSHORT1.
    assert.equal((await callback(s.token, success(s, 15, 'RCPTSHORT1'))).status, 200);
    const invoice = await invoiceRow(s.invoice.id);
    const [attempt] = await attemptsOf(s.invoice.id);
    assert.equal(
      await events(s.invoice.id, 'payment_needs_review'),
      1,
      `a callback whose amount does not match must be reviewed; instead invoice.mpesa_receipt=${invoice.mpesa_receipt}, attempt.mpesa_receipt=${attempt!.mpesa_receipt}, receipt_added events=${await events(s.invoice.id, 'receipt_added')}`,
    );
    assert.notEqual(invoice.mpesa_receipt, 'RCPTSHORT1', 'the receipt of a KES 15 payment is not the receipt of a KES 1500 invoice');
    assert.equal(attempt!.mpesa_receipt, null);
    assert.equal(await events(s.invoice.id, 'receipt_added'), 0);
    assert.match(attempt!.review_reason ?? '', /^amount_mismatch: paid 15 receipt RCPTSHORT1$/);
    // The payment the query confirmed stands; the merchant is told, truthfully, as for any mismatch.
    assert.equal(attempt!.status, 'succeeded');
    assert.equal(invoice.status, 'paid');
    const notices = await f.database.handle.db.selectFrom('outbound_messages').select('content').where('recipient', '=', s.merchant).where('kind', '=', 'notice').orderBy('created_at').execute();
    assert.equal(notices.length, noticesBefore + 1, 'the merchant is told once');
    assert.deepEqual((notices.at(-1)!.content as { message: unknown }).message, texts.en.paymentNeedsReview(s.invoice.number, 1500, 15, { alreadyPaid: true }));

    // The genuine callback (the amount asked) still brings the receipt afterwards.
    assert.equal((await callback(s.token, success(s, 1500, 'RCPTRIGHT1'))).status, 200);
    assert.equal((await invoiceRow(s.invoice.id)).mpesa_receipt, 'RCPTRIGHT1');
  });

  test('reconciliation racing a wrong-amount callback: the review is not overridden by the query', async () => {
    const s = await invoiceWithPush(1500);
    await onlyPending(s.invoice.id);
    clock += 4 * 60_000;
    // The callback (KES 15) lands while the reconciler is waiting for Daraja's query answer.
    const racing: DarajaClient = {
      configured: true,
      stkPush: () => Promise.reject(new Error('not used')),
      async stkQuery() {
        const res = await callback(s.token, success(s, 15, 'RCPTRACE01'));
        assert.equal(res.status, 200);
        return { state: 'completed', resultCode: 0, resultDesc: 'The service request is processed successfully.' };
      },
    };
    await worker(racing).reconcile();
    const [attempt] = await attemptsOf(s.invoice.id);
    assert.match(attempt!.review_reason ?? '', /amount_mismatch/, 'the callback was recorded for review');
    assert.equal(
      (await invoiceRow(s.invoice.id)).status,
      'sent',
      `the invoice the merchant was told needs review (paid 15 of 1500) was then marked paid by the query; attempt.status=${attempt!.status}, receipts to customer=${(await kindsTo(s.customer)).filter((k) => k === 'receipt').length}`,
    );
    assert.equal(attempt!.status, 'failed');
    assert.equal((await kindsTo(s.customer)).filter((k) => k === 'receipt').length, 0);
    // Asked again later (the attempt is no longer pending, so reconciliation leaves it alone).
    clock += 4 * 60_000;
    await f.deps.payments.reconcile();
    assert.equal((await invoiceRow(s.invoice.id)).status, 'sent');
  });
});

describe('review: the 2-minute guard and a push whose answer never came', () => {
  async function contentsTo(phone: string, kind: string) {
    const rows = await f.database.handle.db.selectFrom('outbound_messages').select('content').where('recipient', '=', phone).where('kind', '=', kind).orderBy('created_at').execute();
    return rows.map((r) => (r.content as { message: unknown }).message);
  }

  test('a push that timed out (the prompt may be on the phone) still holds off a new prompt for 2 minutes', async () => {
    daraja.queuePush({ kind: 'hang' });
    const { invoice, ...p } = await sendInvoice();
    await waitFor(async () => (await attemptsOf(invoice.id))[0]?.status === 'failed', 10_000, 'push timed out');
    assert.equal((await attemptsOf(invoice.id))[0]!.push_unclear, true);
    // The code keeps this attempt's token precisely because the prompt may have reached the phone.
    await say(p.customer, 'pay');
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const pushes = daraja.pushes().filter((r) => r.body.PhoneNumber === p.customer).length;
    const attempts = await attemptsOf(invoice.id);
    assert.equal(pushes, 1, `a second STK prompt was sent within seconds of one that may still be on the phone (attempts: ${attempts.map((a) => a.status).join(', ')})`);
    assert.equal(attempts.length, 1);
    // Two minutes after that push, a new prompt goes.
    clock += 2 * 60_000 + 1_000;
    await say(p.customer, 'pay');
    await waitFor(() => daraja.pushes().filter((r) => r.body.PhoneNumber === p.customer).length === 2, 10_000, 'second push');
  });

  test('a bare 5xx on the push also holds off a new prompt; a definite refusal by Daraja does not', async () => {
    daraja.queuePush({ kind: 'raw', status: 502, body: 'Bad gateway' });
    const unclear = await sendInvoice();
    await waitFor(async () => (await attemptsOf(unclear.invoice.id))[0]?.status === 'failed', 10_000, 'push ended');
    await say(unclear.customer, 'pay');
    assert.equal((await attemptsOf(unclear.invoice.id)).length, 1, 'held off after a 502');

    daraja.queuePush({ kind: 'error', status: 400, code: '400.002.02', message: 'Bad Request - Invalid PhoneNumber' });
    const refused = await sendInvoice();
    await waitFor(async () => (await attemptsOf(refused.invoice.id))[0]?.status === 'failed', 10_000, 'push refused');
    assert.equal((await attemptsOf(refused.invoice.id))[0]!.push_unclear, false);
    await say(refused.customer, 'pay');
    await waitFor(() => daraja.pushes().filter((r) => r.body.PhoneNumber === refused.customer).length === 2, 10_000, 'a new prompt at once');
  });

  test('the customer whose own push went unanswered is not told it could not be sent; after a refusal they are', async () => {
    daraja.queuePush({ kind: 'error', status: 400, code: '400.002.02', message: 'Bad Request - Invalid PhoneNumber' });
    const { invoice, ...p } = await sendInvoice();
    await waitFor(async () => (await attemptsOf(invoice.id))[0]?.status === 'failed', 10_000, 'first push refused');
    // The customer's own prompt is refused by Daraja: "couldn't send" is the truth.
    daraja.queuePush({ kind: 'error', status: 400, code: '400.002.02', message: 'Bad Request - Invalid PhoneNumber' });
    // A second later on the test clock, so each attempt has its own created_at and attemptsOf's
    // [1] and [2] are the customer's prompts (a refused prompt holds off nothing, at any age).
    clock += 1_000;
    await say(p.customer, 'pay');
    await waitFor(async () => (await attemptsOf(invoice.id))[1]?.status === 'failed', 10_000, 'customer push refused');
    await waitFor(async () => (await contentsTo(p.customer, 'notice')).length === 1, 5_000, 'refusal notice');
    assert.deepEqual((await contentsTo(p.customer, 'notice'))[0], texts.en.promptNotStarted(invoice.number, 'refused', invoice.id));
    // Then no answer at all: the prompt may be on the phone, so it is not called a failure.
    daraja.queuePush({ kind: 'hang' });
    clock += 1_000;
    await say(p.customer, 'pay');
    await waitFor(async () => (await attemptsOf(invoice.id))[2]?.status === 'failed', 10_000, 'customer push timed out');
    await waitFor(async () => (await contentsTo(p.customer, 'notice')).length === 2, 5_000, 'unclear notice');
    const unclear = (await contentsTo(p.customer, 'notice'))[1];
    assert.deepEqual(unclear, texts.en.promptNotStarted(invoice.number, 'unclear', invoice.id));
    assert.doesNotMatch(JSON.stringify(unclear), /couldn't send/);
  });
});

describe('review: reminders', () => {
  /**
   * The database as the reminder run sees it, with `hook` run once just before its first
   * transaction: what happens between the run listing the invoices and writing a reminder.
   */
  function beforeFirstTransaction<D extends object & { transaction(): { execute: (fn: never) => Promise<unknown> } }>(base: D, hook: (target: D) => Promise<void>): D {
    let done = false;
    return new Proxy(base, {
      get(target, prop) {
        if (prop !== 'transaction') {
          const value: unknown = Reflect.get(target, prop, target);
          return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        }
        return () => {
          const builder = target.transaction();
          return {
            async execute(fn: never) {
              if (!done) {
                done = true;
                await hook(target);
              }
              return builder.execute(fn);
            },
          };
        };
      },
    });
  }

  test('an invoice paid while the reminder run is under way gets no "please pay" reminder', async () => {
    const s = await invoiceWithPush();
    const tomorrow = new Date(clock + 3 * 3600_000 + 86_400_000).toISOString().slice(0, 10);
    await f.database.handle.db.updateTable('invoices').set({ due_date: tomorrow }).where('id', '=', s.invoice.id).execute();
    // The run has listed the invoices due tomorrow; before it writes this one's reminder, the
    // customer pays (their callback lands). A long run over many invoices makes this window wide.
    const db = beforeFirstTransaction(f.database.handle.db, async () => {
      assert.equal((await callback(s.token, success(s, 1500, 'RCPTREMIND1'))).status, 200);
    });
    const w = createPayments({ db, jobs: f.deps.jobs, outbox: f.deps.outbox, daraja: f.deps.daraja, config: f.deps.config, metrics: f.deps.metrics, logger: f.deps.logger, now });
    await w.sendReminders();
    assert.equal((await invoiceRow(s.invoice.id)).status, 'paid');
    assert.deepEqual(
      (await kindsTo(s.customer)).filter((k) => k === 'reminder' || k === 'receipt'),
      ['receipt'],
      'the customer got a receipt, then a reminder to pay the same invoice',
    );
    // Not claimed either: the once-only record is not spent on a reminder never sent.
    assert.equal((await f.database.handle.db.selectFrom('invoice_reminders').select('kind').where('invoice_id', '=', s.invoice.id).execute()).length, 0);
  });

  test('an invoice cancelled, or its due date moved, while the run is under way gets no reminder', async () => {
    const s = await invoiceWithPush();
    const tomorrow = new Date(clock + 3 * 3600_000 + 86_400_000).toISOString().slice(0, 10);
    const later = new Date(clock + 3 * 3600_000 + 5 * 86_400_000).toISOString().slice(0, 10);
    const t = await invoiceWithPush();
    await f.database.handle.db.updateTable('invoices').set({ due_date: tomorrow }).where('id', 'in', [s.invoice.id, t.invoice.id]).execute();
    const db = beforeFirstTransaction(f.database.handle.db, async (target) => {
      await say(s.merchant, `cancel ${s.invoice.number}`);
      await target.updateTable('invoices').set({ due_date: later }).where('id', '=', t.invoice.id).execute();
    });
    const w = createPayments({ db, jobs: f.deps.jobs, outbox: f.deps.outbox, daraja: f.deps.daraja, config: f.deps.config, metrics: f.deps.metrics, logger: f.deps.logger, now });
    await w.sendReminders();
    assert.equal((await invoiceRow(s.invoice.id)).status, 'cancelled');
    assert.equal((await kindsTo(s.customer)).filter((k) => k === 'reminder').length, 0, 'cancelled: no reminder');
    assert.equal((await kindsTo(t.customer)).filter((k) => k === 'reminder').length, 0, 'now due later: no "due tomorrow" reminder');
  });
});

describe('source allow-list', () => {
  test('with MPESA_CALLBACK_ALLOWED_IPS set, only listed addresses reach the callback (real HTTP)', async () => {
    const guarded = buildTestApp(f.database, { env: { MPESA_CALLBACK_ALLOWED_IPS: '196.201.214.200, 196.201.214.206' } });
    const server = serve({ fetch: guarded.app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    const { port } = server.address() as AddressInfo;
    try {
      const post = (headers: Record<string, string>) =>
        fetch(`http://127.0.0.1:${port}/payments/stk/callback/some-token`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{}' });
      assert.equal((await post({})).status, 403, '127.0.0.1 is not on the list');
      assert.equal((await post({ 'fly-client-ip': '203.0.113.7' })).status, 403);
      assert.equal((await post({ 'fly-client-ip': '196.201.214.206' })).status, 404, 'allowed through to the token check');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  test('with TRUSTED_PROXIES set, the proxy headers are believed from those networks only (real HTTP from 127.0.0.1)', async () => {
    const post = async (env: Record<string, string>) => {
      const guarded = buildTestApp(f.database, { env: { MPESA_CALLBACK_ALLOWED_IPS: '196.201.214.206', ...env } });
      const server = serve({ fetch: guarded.app.fetch, port: 0, hostname: '127.0.0.1' });
      await new Promise<void>((resolve) => server.once('listening', () => resolve()));
      const { port } = server.address() as AddressInfo;
      try {
        const res = await fetch(`http://127.0.0.1:${port}/payments/stk/callback/some-token`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'fly-client-ip': '196.201.214.206' },
          body: '{}',
        });
        return res.status;
      } finally {
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    };
    // Another machine on the private network (not the proxy) cannot claim an allowed address.
    assert.equal(await post({ TRUSTED_PROXIES: 'fdaa::/16' }), 403, '127.0.0.1 is not a trusted proxy: its header is not believed');
    assert.equal(await post({ TRUSTED_PROXIES: '127.0.0.1' }), 404, 'from the trusted proxy, the header is believed (through to the token check)');
  });

  test('off Fly (no FLY_APP_NAME), a client\'s own Fly-Client-IP passed on by a proxy is not believed: X-Forwarded-For is (found by a security review; real HTTP from 127.0.0.1)', async () => {
    const post = async (env: Record<string, string>) => {
      const guarded = buildTestApp(f.database, { env: { MPESA_CALLBACK_ALLOWED_IPS: '196.201.214.206', TRUSTED_PROXIES: '127.0.0.1', ...env } });
      const server = serve({ fetch: guarded.app.fetch, port: 0, hostname: '127.0.0.1' });
      await new Promise<void>((resolve) => server.once('listening', () => resolve()));
      const { port } = server.address() as AddressInfo;
      const send = (headers: Record<string, string>) =>
        fetch(`http://127.0.0.1:${port}/payments/stk/callback/some-token`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{}' }).then((r) => r.status);
      try {
        return {
          spoofed: await send({ 'fly-client-ip': '196.201.214.206', 'x-forwarded-for': '198.51.100.66' }),
          forwarded: await send({ 'x-forwarded-for': '196.201.214.206' }),
        };
      } finally {
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    };
    assert.deepEqual(await post({ FLY_APP_NAME: '' }), { spoofed: 403, forwarded: 404 }, 'off Fly: the proxy\'s X-Forwarded-For decides');
    assert.deepEqual(await post({}), { spoofed: 404, forwarded: 404 }, 'on Fly: Fly\'s proxy wrote Fly-Client-IP itself');
    assert.equal(clientAddress('10.0.0.5', { fly: '196.201.214.206', forwarded: '198.51.100.66' }, undefined, false), '198.51.100.66');
    assert.equal(clientAddress('10.0.0.5', { fly: '196.201.214.206' }, undefined, false), '10.0.0.5', 'off Fly, only the header nobody checks: the socket');
  });

  test('proxyTrust: networks of either family, IPv4-mapped sockets as their IPv4, nothing else', () => {
    const trusted = proxyTrust(['172.16.0.0/12', 'fdaa::/16', '10.1.2.3']);
    assert.equal(clientAddress('172.31.255.1', { fly: '196.201.214.200' }, trusted), '196.201.214.200');
    assert.equal(clientAddress('::ffff:172.20.0.9', { fly: '196.201.214.200' }, trusted), '196.201.214.200');
    assert.equal(clientAddress('fdaa:0:1::3', { forwarded: '6.6.6.6, 196.201.214.200' }, trusted), '196.201.214.200');
    assert.equal(clientAddress('10.1.2.3', { fly: '196.201.214.200' }, trusted), '196.201.214.200');
    // Private, but not listed: the socket's own address.
    assert.equal(clientAddress('10.1.2.4', { fly: '196.201.214.200' }, trusted), '10.1.2.4');
    assert.equal(clientAddress('192.168.1.1', { fly: '196.201.214.200' }, trusted), '192.168.1.1');
    assert.equal(clientAddress('fd00::1', { fly: '196.201.214.200' }, trusted), 'fd00::1');
    assert.throws(() => proxyTrust(['not-an-address']), RangeError);
  });

  test('the caller address comes from the proxy header only when the socket is a private proxy', () => {
    assert.equal(clientAddress('172.16.5.4', { fly: '196.201.214.200' }), '196.201.214.200');
    assert.equal(clientAddress('fdaa:0:1::3', { forwarded: '6.6.6.6, 196.201.214.200' }), '196.201.214.200', 'only the entry our proxy appended');
    assert.equal(clientAddress('10.0.0.5', { forwarded: '196.201.214.200, 203.0.113.9' }), '203.0.113.9', 'what the client wrote first is not believed');
    assert.equal(clientAddress('::ffff:172.18.0.3', { fly: '196.201.214.200' }), '196.201.214.200', 'an IPv4-mapped private proxy');
    assert.equal(clientAddress('203.0.113.9', { fly: '196.201.214.200' }), '203.0.113.9', 'a public caller cannot claim another address');
    assert.equal(clientAddress('::ffff:203.0.113.9', {}), '203.0.113.9');
  });
});

