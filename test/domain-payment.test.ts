/** The pure payment rules: when a prompt may start, what a result does, reasons in words. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { InvoiceStatus, PaymentAttemptStatus } from '../src/db/schema.js';
import { PROMPT_COOLDOWN_MS, decidePaymentRequest, decideResult, failureReason } from '../src/domain/payment.js';

const NOW = new Date('2026-11-22T09:00:00Z');
const ago = (ms: number) => new Date(NOW.getTime() - ms);

describe('decidePaymentRequest', () => {
  const cases: Array<[InvoiceStatus, { status: PaymentAttemptStatus; createdAt: Date } | undefined, string]> = [
    ['sent', undefined, 'start'],
    ['failed', undefined, 'start'],
    ['pending', undefined, 'start'],
    ['paid', undefined, 'already_paid'],
    ['cancelled', undefined, 'cancelled'],
    ['sent', { status: 'pending', createdAt: ago(PROMPT_COOLDOWN_MS - 1) }, 'prompt_pending'],
    ['sent', { status: 'pending', createdAt: ago(PROMPT_COOLDOWN_MS) }, 'start'],
    ['sent', { status: 'failed', createdAt: ago(1_000) }, 'start'],
    ['sent', { status: 'expired', createdAt: ago(1_000) }, 'start'],
    ['paid', { status: 'pending', createdAt: ago(1_000) }, 'already_paid'],
  ];
  for (const [invoice, latest, expected] of cases) {
    test(`${invoice} / ${latest === undefined ? 'no attempt' : `${latest.status} ${NOW.getTime() - latest.createdAt.getTime()} ms ago`} -> ${expected}`, () => {
      assert.equal(decidePaymentRequest(invoice, latest, NOW), expected);
    });
  }
});

describe('decideResult', () => {
  const statuses: PaymentAttemptStatus[] = ['pending', 'succeeded', 'failed', 'expired'];
  for (const status of statuses) {
    test(`success on ${status}`, () => {
      const decision = decideResult(status, { resultCode: 0, amount: 1500 }, 1500);
      assert.deepEqual(decision, status === 'succeeded' ? { action: 'ignore', why: 'duplicate' } : { action: 'mark_paid' });
    });
    test(`failure on ${status}`, () => {
      const decision = decideResult(status, { resultCode: 1032, amount: null }, 1500);
      const expected =
        status === 'pending' ? { action: 'mark_failed' } : status === 'succeeded' ? { action: 'ignore', why: 'success_recorded' } : { action: 'ignore', why: 'not_pending' };
      assert.deepEqual(decision, expected);
    });
  }
  test('a success for another amount goes to review; an unknown amount (STK query) does not', () => {
    assert.deepEqual(decideResult('pending', { resultCode: 0, amount: 15 }, 1500), { action: 'review', reason: 'amount_mismatch' });
    assert.deepEqual(decideResult('pending', { resultCode: 0, amount: null }, 1500), { action: 'mark_paid' });
  });
});

test('failureReason reads every documented result code', () => {
  assert.equal(failureReason(1032), 'cancelled');
  assert.equal(failureReason(1037), 'unreachable');
  assert.equal(failureReason(2001), 'wrong_pin');
  assert.equal(failureReason(1), 'insufficient_funds');
  for (const code of [2, 3, 4, 8]) assert.equal(failureReason(code), 'limit');
  assert.equal(failureReason(1019), 'expired');
  assert.equal(failureReason(17), 'other');
  assert.equal(failureReason(9999), 'other');
});
