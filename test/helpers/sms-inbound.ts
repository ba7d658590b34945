/**
 * Shared steps of the incoming-SMS suites (test/sms-inbound*.test.ts): Africa's Talking's
 * incoming-message fields, and a customer cancelling the M-PESA prompt of an invoice (which
 * tells the customer "reply PAY").
 */
import assert from 'node:assert/strict';
import { callbackBody, startFakeDaraja, type FakeDaraja } from '../fakes/daraja.js';
import { startChannelFixture, waitFor, type ChannelFixture } from './channel.js';
import { MPESA_TEST, mpesaEnv } from './mpesa-env.js';

/** The fields of one incoming message from `customer`, as Africa's Talking posts them. */
export const smsFrom = (customer: string, text: string, id: string) => ({
  date: '2026-12-02 07:30:00',
  from: `+${customer}`,
  id,
  linkId: `link-${id}`,
  text,
  to: '20880',
  networkCode: '63902',
});

/** The STK pushes the fake Daraja received for `customer`. */
export const pushesTo = (daraja: FakeDaraja, customer: string) => daraja.pushes().filter((r) => r.body.PhoneNumber === customer);

/**
 * Waits for the push after the first `pushesBefore` for `customer` (invoice `invoiceId`), then
 * the customer cancels it (result 1032, through the real callback route); returns once the
 * notices have gone.
 */
export async function cancelNextPrompt(f: ChannelFixture, daraja: FakeDaraja, customer: string, invoiceId: string, pushesBefore: number): Promise<void> {
  await waitFor(() => pushesTo(daraja, customer).length === pushesBefore + 1, 10_000, 'the stk push');
  const push = pushesTo(daraja, customer).at(-1)!;
  const token = String(push.body.CallBackURL).slice(MPESA_TEST.callbackBase.length + 1);
  const db = f.database.handle.db;
  let attempt: { checkout_request_id: string | null; merchant_request_id: string | null } | undefined;
  await waitFor(async () => {
    attempt = await db.selectFrom('payment_attempts').select(['checkout_request_id', 'merchant_request_id']).where('invoice_id', '=', invoiceId).orderBy('created_at', 'desc').executeTakeFirst();
    return attempt?.checkout_request_id != null;
  }, 5_000, 'checkout id stored');
  const cancelled = callbackBody({ checkoutRequestId: attempt!.checkout_request_id!, merchantRequestId: attempt!.merchant_request_id!, resultCode: 1032, resultDesc: 'Request cancelled by user', phone: customer });
  const res = await f.app.request(`/payments/stk/callback/${token}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(cancelled) });
  assert.equal(res.status, 200);
  await f.deps.outbox.idle();
}

/**
 * A channel fixture whose M-PESA calls go to a fake Daraja and whose incoming-SMS route opens
 * with `token`; `env` adds to that. Close both when done (the fixture first).
 */
export async function startSmsFixture(token: string, env: Record<string, string> = {}): Promise<{ f: ChannelFixture; daraja: FakeDaraja }> {
  const daraja = await startFakeDaraja({ consumerKey: MPESA_TEST.consumerKey, consumerSecret: MPESA_TEST.consumerSecret });
  const f = await startChannelFixture({ env: { ...mpesaEnv(daraja.baseUrl), SMS_INBOUND_TOKEN: token, ...env } });
  return { f, daraja };
}
