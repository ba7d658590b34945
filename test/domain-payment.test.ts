/** The pure payment rules: when a prompt may start, what a result does, reasons in words. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { InvoiceStatus, PaymentAttemptStatus } from '../src/db/schema.js';
import fc from 'fast-check';
import {
  EXPIRE_AFTER_MS,
  GIVE_UP_UNANSWERED_MS,
  PROMPT_COOLDOWN_MS,
  decidePaymentRequest,
  expiresAfterQuery,
  decideResult,
  failureReason,
  planResults,
  type AttemptState,
  type LatestAttempt,
  type ResultItem,
  type ResultPlan,
} from '../src/domain/payment.js';

const NOW = new Date('2026-11-22T09:00:00Z');
const ago = (ms: number) => new Date(NOW.getTime() - ms);

describe('decidePaymentRequest', () => {
  const at = (status: PaymentAttemptStatus, createdAt: Date, pushStartedAt: Date | null = createdAt, pushUnclear = false): LatestAttempt => ({ status, createdAt, pushStartedAt, pushUnclear });
  const cases: Array<[InvoiceStatus, LatestAttempt | undefined, string]> = [
    ['sent', undefined, 'start'],
    ['failed', undefined, 'start'],
    ['pending', undefined, 'start'],
    ['paid', undefined, 'already_paid'],
    ['cancelled', undefined, 'cancelled'],
    ['sent', at('pending', ago(PROMPT_COOLDOWN_MS - 1)), 'prompt_pending'],
    ['sent', at('pending', ago(PROMPT_COOLDOWN_MS)), 'start'],
    ['sent', at('failed', ago(1_000)), 'start'],
    ['sent', at('expired', ago(1_000)), 'start'],
    ['paid', at('pending', ago(1_000)), 'already_paid'],
    // A pending attempt whose push started later than it was asked for counts from the push.
    ['sent', at('pending', ago(PROMPT_COOLDOWN_MS + 60_000), ago(PROMPT_COOLDOWN_MS - 1)), 'prompt_pending'],
    ['sent', at('pending', ago(PROMPT_COOLDOWN_MS + 60_000), null), 'start'],
    // A push with no clear answer (timeout, bare 5xx) may have put the prompt on the phone:
    // 2 minutes from that push, even though the attempt ended.
    ['sent', at('failed', ago(PROMPT_COOLDOWN_MS + 60_000), ago(1_000), true), 'prompt_pending'],
    ['sent', at('failed', ago(PROMPT_COOLDOWN_MS + 60_000), ago(PROMPT_COOLDOWN_MS - 1), true), 'prompt_pending'],
    ['sent', at('failed', ago(PROMPT_COOLDOWN_MS + 60_000), ago(PROMPT_COOLDOWN_MS), true), 'start'],
    ['sent', at('expired', ago(1_000), ago(1_000), true), 'prompt_pending'],
    ['failed', at('failed', ago(1_000), ago(1_000), true), 'prompt_pending'],
    ['paid', at('failed', ago(1_000), ago(1_000), true), 'already_paid'],
    ['cancelled', at('failed', ago(1_000), ago(1_000), true), 'cancelled'],
    // A definite refusal by Daraja: nothing reached the phone, a new prompt goes at once.
    ['sent', at('failed', ago(1_000), ago(1_000), false), 'start'],
  ];
  for (const [invoice, latest, expected] of cases) {
    const pushed = latest?.pushStartedAt == null ? 'no push' : `pushed ${NOW.getTime() - latest.pushStartedAt.getTime()} ms ago${latest.pushUnclear ? ' (unclear)' : ''}`;
    test(`${invoice} / ${latest === undefined ? 'no attempt' : `${latest.status} ${NOW.getTime() - latest.createdAt.getTime()} ms ago, ${pushed}`} -> ${expected}`, () => {
      assert.equal(decidePaymentRequest(invoice, latest, NOW), expected);
    });
  }
});

describe('expiresAfterQuery (an attempt still pending after a query)', () => {
  test('"still being processed", or no way to ask: expired after 30 minutes, not before', () => {
    for (const query of ['still_processing', 'not_queryable'] as const) {
      assert.equal(expiresAfterQuery(EXPIRE_AFTER_MS, query), false);
      assert.equal(expiresAfterQuery(EXPIRE_AFTER_MS + 1, query), true);
    }
  });

  test('unanswered queries prove nothing: pending until a day has passed', () => {
    assert.equal(expiresAfterQuery(EXPIRE_AFTER_MS + 1, 'unanswered'), false);
    assert.equal(expiresAfterQuery(GIVE_UP_UNANSWERED_MS, 'unanswered'), false);
    assert.equal(expiresAfterQuery(GIVE_UP_UNANSWERED_MS + 1, 'unanswered'), true);
  });

  test('for any age, an unanswered query never expires an attempt that an answer would keep', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10 * GIVE_UP_UNANSWERED_MS }), (age) => {
        if (expiresAfterQuery(age, 'unanswered')) assert.equal(expiresAfterQuery(age, 'still_processing'), true);
      }),
    );
  });
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
  test('an attempt under review for another amount: a success without an amount (STK query) leaves the review standing', () => {
    const disputed = { amountRequired: false, amountDisputed: true };
    assert.deepEqual(decideResult('failed', { resultCode: 0, amount: null }, 1500, disputed), { action: 'ignore', why: 'amount_disputed' });
    assert.deepEqual(decideResult('failed', { resultCode: 0, amount: null }, 1500, { ...disputed, amountRequired: true }), { action: 'ignore', why: 'amount_disputed' });
    // A success that does carry the amount asked still counts (the money moved).
    assert.deepEqual(decideResult('failed', { resultCode: 0, amount: 1500 }, 1500, disputed), { action: 'mark_paid' });
    assert.deepEqual(decideResult('failed', { resultCode: 1032, amount: null }, 1500, disputed), { action: 'ignore', why: 'not_pending' });
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

describe('planResults (several results in one transaction)', () => {
  const item = (over: Partial<Omit<ResultItem, 'result'>> & { result?: Partial<ResultItem['result']> } = {}): ResultItem => ({
    attemptId: 'a1',
    invoiceId: 'i1',
    attempt: { status: 'pending', paidTwice: false, receipt: null, amountDisputed: false },
    askedAmount: 1500,
    amountRequired: true,
    ...over,
    result: { resultCode: 0, amount: 1500, receipt: 'R1', ...over.result },
  });
  const sent = (...ids: string[]) => new Map<string, InvoiceStatus>(ids.map((id) => [id, 'sent']));

  test('one result of each kind reads as decideResult does', () => {
    assert.deepEqual(planResults([item()], sent('i1'), new Map()), [{ action: 'mark_paid' }]);
    assert.deepEqual(planResults([item({ result: { amount: 15 } })], sent('i1'), new Map()), [{ action: 'review', reason: 'amount_mismatch' }]);
    assert.deepEqual(planResults([item({ result: { amount: null } })], sent('i1'), new Map()), [{ action: 'review', reason: 'amount_missing' }]);
    assert.deepEqual(planResults([item({ attempt: { status: 'succeeded', paidTwice: false, receipt: 'R0', amountDisputed: false } })], sent('i1'), new Map()), [{ action: 'ignore', why: 'duplicate' }]);
    assert.deepEqual(planResults([item({ result: { resultCode: 1032, amount: null, receipt: null } })], sent('i1'), new Map()), [{ action: 'mark_failed', notify: true }]);
    assert.deepEqual(planResults([item({ attempt: { status: 'expired', paidTwice: false, receipt: null, amountDisputed: false }, result: { resultCode: 1032 } })], sent('i1'), new Map()), [{ action: 'ignore', why: 'not_pending' }]);
  });

  test('a failure on a paid or cancelled invoice tells nobody', () => {
    const failure = item({ result: { resultCode: 2001, amount: null, receipt: null } });
    assert.deepEqual(planResults([failure], new Map([['i1', 'paid']]), new Map()), [{ action: 'mark_failed', notify: false }]);
    assert.deepEqual(planResults([failure], new Map([['i1', 'cancelled']]), new Map()), [{ action: 'mark_failed', notify: false }]);
  });

  test('a receipt held by another attempt is a duplicate; held by this attempt it still pays', () => {
    assert.deepEqual(planResults([item()], sent('i1'), new Map([['R1', 'other']])), [{ action: 'ignore', why: 'receipt_taken' }]);
    assert.deepEqual(planResults([item({ attempt: { status: 'failed', paidTwice: false, receipt: 'R1', amountDisputed: false } })], sent('i1'), new Map([['R1', 'a1']])), [{ action: 'mark_paid' }]);
  });

  test('a success on an invoice already paid (another attempt) is paid twice: recorded for a refund', () => {
    assert.deepEqual(planResults([item()], new Map([['i1', 'paid']]), new Map()), [{ action: 'paid_twice' }]);
  });

  test('a second payment already recorded is reported once: later results add at most its receipt', () => {
    const paidTwice = (receipt: string | null) => ({ status: 'failed' as const, paidTwice: true, receipt, amountDisputed: false });
    const paid = new Map<string, InvoiceStatus>([['i1', 'paid']]);
    assert.deepEqual(planResults([item({ attempt: paidTwice(null) })], paid, new Map()), [{ action: 'add_receipt' }]);
    assert.deepEqual(planResults([item({ attempt: paidTwice('R1') })], paid, new Map([['R1', 'a1']])), [{ action: 'ignore', why: 'duplicate' }]);
    assert.deepEqual(planResults([item({ attempt: paidTwice(null), result: { receipt: null } })], paid, new Map()), [{ action: 'ignore', why: 'duplicate' }]);
    assert.deepEqual(planResults([item({ attempt: paidTwice(null) })], paid, new Map([['R1', 'a2']])), [{ action: 'ignore', why: 'receipt_taken' }]);
    assert.deepEqual(planResults([item({ attempt: paidTwice(null), result: { resultCode: 1032, amount: null, receipt: null } })], paid, new Map()), [
      { action: 'ignore', why: 'not_pending' },
    ]);
    // The STK query's success (no receipt), then the late callback with the receipt, in one group.
    assert.deepEqual(planResults([item({ amountRequired: false, result: { amount: null, receipt: null } }), item({ result: { receipt: 'R2' } }), item({ result: { receipt: 'R3' } })], paid, new Map()), [
      { action: 'paid_twice' },
      { action: 'add_receipt' },
      { action: 'ignore', why: 'duplicate' },
    ]);
  });

  test('a payment learnt from an STK query (no receipt) gets its receipt from the later callback, once', () => {
    const queried = { status: 'succeeded' as const, paidTwice: false, receipt: null, amountDisputed: false };
    assert.deepEqual(planResults([item({ attempt: queried })], new Map([['i1', 'paid']]), new Map()), [{ action: 'add_receipt' }]);
    assert.deepEqual(planResults([item({ attempt: { ...queried, receipt: 'R0' } })], new Map([['i1', 'paid']]), new Map()), [{ action: 'ignore', why: 'duplicate' }]);
    assert.deepEqual(planResults([item({ attempt: queried, result: { receipt: null } })], new Map([['i1', 'paid']]), new Map()), [{ action: 'ignore', why: 'duplicate' }]);
    assert.deepEqual(planResults([item({ attempt: queried, result: { resultCode: 1032, amount: null, receipt: null } })], new Map([['i1', 'paid']]), new Map()), [
      { action: 'ignore', why: 'success_recorded' },
    ]);
    assert.deepEqual(planResults([item({ attempt: queried })], new Map([['i1', 'paid']]), new Map([['R1', 'a7']])), [{ action: 'ignore', why: 'receipt_taken' }]);
    // Query success, then two callbacks: the first brings the receipt, the second is a duplicate.
    assert.deepEqual(
      planResults([item({ amountRequired: false, result: { amount: null, receipt: null } }), item({ result: { receipt: 'R2' } }), item({ result: { receipt: 'R2' } })], new Map([['i1', 'sent']]), new Map()),
      [{ action: 'mark_paid' }, { action: 'add_receipt' }, { action: 'ignore', why: 'duplicate' }],
    );
  });

  test('a callback for another amount after a payment learnt from the STK query: review, its receipt not taken', () => {
    const queried = { status: 'succeeded' as const, paidTwice: false, receipt: null, amountDisputed: false };
    const paid = new Map<string, InvoiceStatus>([['i1', 'paid']]);
    assert.deepEqual(planResults([item({ attempt: queried, result: { amount: 15, receipt: 'R9' } })], paid, new Map()), [{ action: 'review_receipt', reason: 'amount_mismatch' }]);
    assert.deepEqual(planResults([item({ attempt: queried, result: { amount: null, receipt: 'R9' } })], paid, new Map()), [{ action: 'review_receipt', reason: 'amount_missing' }]);
    // A second payment recorded from the query: the same.
    const twice = { status: 'failed' as const, paidTwice: true, receipt: null, amountDisputed: false };
    assert.deepEqual(planResults([item({ attempt: twice, result: { amount: 15, receipt: 'R9' } })], paid, new Map()), [{ action: 'review_receipt', reason: 'amount_mismatch' }]);
    // The receipt stays free: the genuine callback after it still brings the receipt.
    assert.deepEqual(planResults([item({ attempt: queried, result: { amount: 15, receipt: 'R9' } }), item({ attempt: queried, result: { receipt: 'R9' } })], paid, new Map()), [
      { action: 'review_receipt', reason: 'amount_mismatch' },
      { action: 'add_receipt' },
    ]);
  });

  test('a callback for another amount, then the STK query saying paid: the review stands (either order in one group)', () => {
    const pending = { status: 'pending' as const, paidTwice: false, receipt: null, amountDisputed: false };
    const query = item({ attempt: pending, amountRequired: false, result: { amount: null, receipt: null } });
    const short = item({ attempt: pending, result: { amount: 15, receipt: 'R9' } });
    assert.deepEqual(planResults([short, query], sent('i1'), new Map()), [
      { action: 'review', reason: 'amount_mismatch' },
      { action: 'ignore', why: 'amount_disputed' },
    ]);
    // As the database holds it after the review.
    assert.deepEqual(planResults([item({ attempt: { ...pending, status: 'failed', amountDisputed: true }, amountRequired: false, result: { amount: null, receipt: null } })], sent('i1'), new Map()), [
      { action: 'ignore', why: 'amount_disputed' },
    ]);
    // The query first pays; the short callback then goes to review, not to the receipt.
    assert.deepEqual(planResults([query, short], sent('i1'), new Map()), [{ action: 'mark_paid' }, { action: 'review_receipt', reason: 'amount_mismatch' }]);
  });

  test('in one group, earlier items count for later ones: the invoice paid, the receipt taken, the attempt settled', () => {
    const plans = planResults(
      [
        item({ attemptId: 'a1', result: { receipt: 'R1' } }),
        item({ attemptId: 'a2', result: { receipt: 'R2' } }),
        item({ attemptId: 'a3', invoiceId: 'i2', result: { receipt: 'R1' } }),
        item({ attemptId: 'a4', result: { resultCode: 1032, amount: null, receipt: null } }),
        item({ attemptId: 'a1', result: { resultCode: 1, amount: null, receipt: null } }),
      ],
      sent('i1', 'i2'),
      new Map(),
    );
    assert.deepEqual(plans, [
      { action: 'mark_paid' },
      { action: 'paid_twice' },
      { action: 'ignore', why: 'receipt_taken' },
      { action: 'mark_failed', notify: false },
      { action: 'ignore', why: 'success_recorded' },
    ]);
  });

  test('property: planning a group at once equals planning its results one at a time, each seeing the ones before', () => {
    const arbItem = fc.record({
      attemptId: fc.constantFrom('a1', 'a2', 'a3', 'a4'),
      invoiceId: fc.constantFrom('i1', 'i2'),
      attempt: fc.record({
        status: fc.constantFrom<PaymentAttemptStatus>('pending', 'succeeded', 'failed', 'expired'),
        paidTwice: fc.boolean(),
        receipt: fc.constantFrom(null, 'R4'),
        amountDisputed: fc.boolean(),
      }),
      askedAmount: fc.constantFrom(100, 1500),
      amountRequired: fc.boolean(),
      result: fc.record({
        resultCode: fc.constantFrom(0, 0, 1, 1032, 2001),
        amount: fc.constantFrom(null, 100, 1500),
        receipt: fc.constantFrom(null, 'R1', 'R2', 'R3'),
      }),
    });
    fc.assert(
      fc.property(
        fc.array(arbItem, { maxLength: 12 }),
        fc.constantFrom<InvoiceStatus>('sent', 'paid', 'cancelled'),
        fc.constantFrom<InvoiceStatus>('sent', 'paid'),
        fc.option(fc.constantFrom('a1', 'a9'), { nil: undefined }),
        (raw, s1, s2, r1Owner) => {
          // Each attempt belongs to one invoice and is found in one state, as in the database
          // (only a failed attempt can have been recorded as paid twice).
          const first = new Map<string, ResultItem>();
          for (const it of raw) if (!first.has(it.attemptId)) first.set(it.attemptId, it);
          const items: ResultItem[] = raw.map((it) => {
            const f = first.get(it.attemptId)!;
            return { ...it, invoiceId: f.invoiceId, askedAmount: f.askedAmount, attempt: { ...f.attempt, paidTwice: f.attempt.paidTwice && f.attempt.status === 'failed' } };
          });
          const invoices = new Map<string, InvoiceStatus>([['i1', s1], ['i2', s2]]);
          const owners = new Map<string, string>(r1Owner === undefined ? [] : [['R1', r1Owner]]);
          const together = planResults(items, invoices, owners);

          // One at a time, the database's state carried from each result to the next.
          const serialInvoices = new Map(invoices);
          const serialOwners = new Map(owners);
          const serialAttempts = new Map<string, AttemptState>();
          const alone: ResultPlan[] = items.map((it) => {
            const before = serialAttempts.get(it.attemptId) ?? it.attempt;
            const [plan] = planResults([{ ...it, attempt: before }], serialInvoices, serialOwners);
            const receipt = it.result.receipt ?? before.receipt;
            if (plan!.action === 'mark_paid') {
              serialInvoices.set(it.invoiceId, 'paid');
              serialAttempts.set(it.attemptId, { ...before, status: 'succeeded', paidTwice: false, receipt });
            }
            if (plan!.action === 'paid_twice') serialAttempts.set(it.attemptId, { ...before, status: 'failed', paidTwice: true, receipt });
            if (plan!.action === 'add_receipt') serialAttempts.set(it.attemptId, { ...before, receipt });
            if (plan!.action === 'review' || plan!.action === 'mark_failed') {
              serialAttempts.set(it.attemptId, { ...before, status: 'failed', amountDisputed: before.amountDisputed || (plan!.action === 'review' && plan!.reason === 'amount_mismatch') });
            }
            if (plan!.action === 'review_receipt') serialAttempts.set(it.attemptId, { ...before, amountDisputed: before.amountDisputed || plan!.reason === 'amount_mismatch' });
            if (['mark_paid', 'paid_twice', 'add_receipt'].includes(plan!.action) && it.result.receipt !== null) serialOwners.set(it.result.receipt, it.attemptId);
            return plan!;
          });
          assert.deepEqual(together, alone);
          // Money rules: at most one paid transition per invoice, never for one already paid;
          // each attempt reported as paid twice at most once; a receipt never goes to two attempts.
          for (const id of ['i1', 'i2']) {
            const paid = together.filter((p, k) => p.action === 'mark_paid' && items[k]!.invoiceId === id).length;
            assert.ok(paid <= (invoices.get(id) === 'paid' ? 0 : 1));
          }
          for (const a of ['a1', 'a2', 'a3', 'a4']) {
            const reports = together.filter((p, k) => p.action === 'paid_twice' && items[k]!.attemptId === a).length;
            assert.ok(reports <= (items.find((it) => it.attemptId === a)?.attempt.paidTwice ? 0 : 1));
          }
          const holders = new Map<string, Set<string>>();
          together.forEach((p, k) => {
            const r = items[k]!.result.receipt;
            if (r !== null && ['mark_paid', 'paid_twice', 'add_receipt'].includes(p.action)) holders.set(r, (holders.get(r) ?? new Set()).add(items[k]!.attemptId));
          });
          for (const [r, set] of holders) assert.ok(set.size === 1 && (owners.get(r) === undefined || set.has(owners.get(r)!)), `receipt ${r}`);
          // A receipt is taken only with the amount asked (or, from an STK query, no amount at all).
          together.forEach((p, k) => {
            const it = items[k]!;
            if (p.action === 'add_receipt' || p.action === 'mark_paid' || p.action === 'paid_twice') assert.ok(it.result.amount === null ? !it.amountRequired : it.result.amount === it.askedAmount);
          });
        },
      ),
      { numRuns: 500 },
    );
  });
});
