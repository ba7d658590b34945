/**
 * STK callbacks through the real route for the group-commit suites (test/payments-batch.test.ts,
 * test/callback-group-write-review.test.ts): an attempt seeded with a known token, its success
 * and 1032 bodies, and how many groups the service has committed so far.
 */
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
