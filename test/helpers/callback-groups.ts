/**
 * STK callbacks through the real route for the group-commit suites (test/payments-batch.test.ts,
 * test/callback-group-write-review.test.ts, test/prepared-stale-callback.test.ts): attempts
 * seeded with known tokens, their success and 1032 bodies, and how many groups the service has
 * committed so far.
 */
import { sha256Hex } from '../../src/security.js';
import { callbackBody } from '../fakes/daraja.js';
import type { ChannelFixture } from './channel.js';

/** An attempt seeded in SQL with a known token (its hash stored, as the service does). */
export type SeededAttempt = { token: string; checkout: string; invoiceId: string; attemptId: string; customer: string };

export function callbackTo(f: ChannelFixture, token: string, body: unknown): Promise<Response> {
  return Promise.resolve(f.app.request(`/payments/stk/callback/${token}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }));
}

export const paidBody = (a: SeededAttempt, receipt: string, amount = 100) =>
  callbackBody({ checkoutRequestId: a.checkout, merchantRequestId: `mr_${a.checkout}`, resultCode: 0, resultDesc: 'The service request is processed successfully.', amount, receipt, phone: a.customer });

export const declinedBody = (a: SeededAttempt) => callbackBody({ checkoutRequestId: a.checkout, merchantRequestId: `mr_${a.checkout}`, resultCode: 1032, resultDesc: 'Request cancelled by user' });

/** Group-commit transactions of callbacks, and callbacks in them, so far. */
export async function callbackGroups(f: ChannelFixture): Promise<{ transactions: number; callbacks: number }> {
  const metric = await f.deps.metrics.groupCommitSize.get();
  const mine = metric.values.filter((v) => v.labels.path === 'mpesa_callback');
  return {
    transactions: mine.find((v) => v.metricName === 'invoiceiq_group_commit_size_count')?.value ?? 0,
    callbacks: mine.find((v) => v.metricName === 'invoiceiq_group_commit_size_sum')?.value ?? 0,
  };
}

let merchantSeq = 0;

/**
 * One merchant with `n` sent invoices of KES 100, each with `attemptsPerInvoice` (1) pending
 * attempts whose tokens are known (their hashes stored, as the service does). Each call a new
 * merchant, its own phone numbers.
 */
export async function seedAttempts(f: ChannelFixture, n: number, options: { attemptsPerInvoice?: number } = {}): Promise<{ merchant: string; attempts: SeededAttempt[] }> {
  merchantSeq += 1;
  const db = f.database.handle.db;
  const merchant = `2547550${String(merchantSeq).padStart(5, '0')}`;
  const { id: merchantId } = await db.insertInto('merchants').values({ phone: merchant, business_name: `Group Shop ${merchantSeq}` }).returning('id').executeTakeFirstOrThrow();
  const attempts: SeededAttempt[] = [];
  for (let i = 1; i <= n; i += 1) {
    const customer = `2547660${String(merchantSeq).padStart(2, '0')}${String(i).padStart(3, '0')}`;
    const invoice = await db
      .insertInto('invoices')
      .values({ merchant_id: merchantId, number: i, customer_phone: customer, amount: '100', description: 'group', status: 'sent', due_date: '2026-12-31' })
      .returning('id')
      .executeTakeFirstOrThrow();
    for (let k = 1; k <= (options.attemptsPerInvoice ?? 1); k += 1) {
      const token = `group-${merchantSeq}-${i}-${k}-token-0123456789abcdef`;
      const checkout = `ws_CO_group_${merchantSeq}_${i}_${k}`;
      const attempt = await db
        .insertInto('payment_attempts')
        .values({ invoice_id: invoice.id, checkout_request_id: checkout, merchant_request_id: `mr_${checkout}`, amount: '100', phone: customer, callback_token_hash: sha256Hex(token), push_started_at: new Date() })
        .returning('id')
        .executeTakeFirstOrThrow();
      attempts.push({ token, checkout, invoiceId: invoice.id, attemptId: attempt.id, customer });
    }
  }
  return { merchant, attempts };
}
