/**
 * Payment rules, pure: when a new M-PESA prompt may start, what a result means for an
 * attempt, and how Daraja's result codes read to a merchant.
 */
import type { InvoiceStatus, PaymentAttemptStatus } from '../db/schema.js';
import type { PaymentFailureReason } from './texts.types.js';

/**
 * A new prompt is refused while an earlier one for the same invoice may still be on the
 * customer's phone: for this long after it was asked for or its push started.
 */
export const PROMPT_COOLDOWN_MS = 2 * 60 * 1000;
/** Attempts still pending this long after their push started (never pushed: after they were asked for) are asked about (STK query). */
export const RECONCILE_AFTER_MS = 3 * 60 * 1000;
/** Attempts M-PESA still calls unfinished (or that cannot be asked about) this long after their push started (never pushed: after they were asked for) are expired. */
export const EXPIRE_AFTER_MS = 30 * 60 * 1000;
/**
 * A prompt not started this long after it was asked for is not sent any more (its push job
 * waited out an outage): the person is no longer waiting with the phone in hand, and a push
 * still running EXPIRE_AFTER_MS after the request could reach a phone after reconciliation
 * expired its attempt (no CheckoutRequestID yet), so nothing would ever ask about it. With a
 * push bounded by MPESA_TIMEOUT_MS (at most a minute), 10 minutes leaves a wide margin.
 */
export const PUSH_STALE_AFTER_MS = 10 * 60 * 1000;
/**
 * Attempts whose STK queries all went unanswered (Daraja down, our credentials refused) are
 * given up this long after their push started: until then the money may have moved, and the next
 * answer settles them.
 */
export const GIVE_UP_UNANSWERED_MS = 24 * 60 * 60 * 1000;

/**
 * How an STK query of a pending attempt ended without settling it: M-PESA answered that it
 * is still being processed, nobody answered (error, timeout), or the attempt cannot be asked
 * about (its push never returned a CheckoutRequestID).
 */
export type UnsettledQuery = 'still_processing' | 'unanswered' | 'not_queryable';

/**
 * Whether an attempt still pending after a query is expired now. An answer that it is still
 * being processed, or no way to ask, expires it after EXPIRE_AFTER_MS; queries nobody answered
 * prove nothing (the customer may have paid and the callback been lost), so they keep it
 * pending, asked again, until GIVE_UP_UNANSWERED_MS.
 */
export function expiresAfterQuery(ageMs: number, query: UnsettledQuery): boolean {
  return ageMs > (query === 'unanswered' ? GIVE_UP_UNANSWERED_MS : EXPIRE_AFTER_MS);
}

export type PaymentRequestDecision = 'start' | 'already_paid' | 'cancelled' | 'prompt_pending';

/** The invoice's latest attempt, as a new prompt request finds it. */
export type LatestAttempt = {
  status: PaymentAttemptStatus;
  createdAt: Date;
  /** When its push started (null: not started, or released after a refusal that proves nothing reached the phone). */
  pushStartedAt: Date | null;
  /** Its push got no clear answer (timeout, bare 5xx): the prompt may be on the phone although the attempt ended. */
  pushUnclear: boolean;
};

export function decidePaymentRequest(invoiceStatus: InvoiceStatus, latestAttempt: LatestAttempt | undefined, now: Date): PaymentRequestDecision {
  if (invoiceStatus === 'paid') return 'already_paid';
  if (invoiceStatus === 'cancelled') return 'cancelled';
  if (latestAttempt !== undefined && promptMayBeLive(latestAttempt, now)) return 'prompt_pending';
  return 'start';
}

/**
 * Whether the attempt's prompt may still be on the phone, so that a second one could be paid
 * as well. A pending attempt counts from the later of its creation and its push; an attempt
 * whose push went unanswered counts from that push, although it is no longer pending. Only a
 * definite refusal by Daraja (not `pushUnclear`) ends the wait at once.
 */
function promptMayBeLive(attempt: LatestAttempt, now: Date): boolean {
  const young = (since: Date) => now.getTime() - since.getTime() < PROMPT_COOLDOWN_MS;
  if (attempt.status === 'pending') {
    const since = attempt.pushStartedAt !== null && attempt.pushStartedAt > attempt.createdAt ? attempt.pushStartedAt : attempt.createdAt;
    return young(since);
  }
  return attempt.status !== 'succeeded' && attempt.pushUnclear && young(attempt.pushStartedAt ?? attempt.createdAt);
}

export type ResultDecision =
  | { action: 'mark_paid' }
  | { action: 'review'; reason: 'amount_mismatch' | 'amount_missing' }
  | { action: 'mark_failed' }
  | { action: 'ignore'; why: 'duplicate' | 'success_recorded' | 'not_pending' | 'amount_disputed' };

/**
 * What a result (callback or query) does to an attempt. A success always counts, even on an
 * attempt already marked failed or expired (the money moved); a failure only ends a pending
 * attempt; nothing ever overwrites a recorded success. `amountDisputed`: the attempt was sent
 * to review because a callback said another amount moved; a success that carries no amount
 * (the STK query) cannot contradict that, so it changes nothing and the review stands.
 */
export function decideResult(
  attemptStatus: PaymentAttemptStatus,
  result: { resultCode: number; amount: number | null },
  askedAmount: number,
  options: { amountRequired: boolean; amountDisputed?: boolean } = { amountRequired: false },
): ResultDecision {
  if (attemptStatus === 'succeeded') return { action: 'ignore', why: result.resultCode === 0 ? 'duplicate' : 'success_recorded' };
  if (result.resultCode === 0) {
    if (result.amount === null && options.amountDisputed === true) return { action: 'ignore', why: 'amount_disputed' };
    if (result.amount === null && options.amountRequired) return { action: 'review', reason: 'amount_missing' };
    if (result.amount !== null && result.amount !== askedAmount) return { action: 'review', reason: 'amount_mismatch' };
    return { action: 'mark_paid' };
  }
  return attemptStatus === 'pending' ? { action: 'mark_failed' } : { action: 'ignore', why: 'not_pending' };
}

/**
 * An attempt as a result finds it. `paidTwice`: already recorded as a second payment of a paid
 * invoice. `amountDisputed`: recorded for review because a callback said another amount moved.
 */
export type AttemptState = { status: PaymentAttemptStatus; paidTwice: boolean; receipt: string | null; amountDisputed: boolean };

/** One result for one attempt, as `planResults` reads it. */
export type ResultItem = {
  attemptId: string;
  invoiceId: string;
  /** The attempt when locked. */
  attempt: AttemptState;
  askedAmount: number;
  result: { resultCode: number; amount: number | null; receipt: string | null };
  amountRequired: boolean;
};

export type ResultPlan =
  | { action: 'ignore'; why: 'duplicate' | 'success_recorded' | 'not_pending' | 'receipt_taken' | 'amount_disputed' }
  | { action: 'review'; reason: 'amount_mismatch' | 'amount_missing' }
  /**
   * A callback for a payment already recorded without its receipt (from an STK query) whose
   * amount is not the attempt's: its receipt is not this payment's proof, so it is not taken.
   * The attempt and invoice stay as they are; the callback is recorded for review and the
   * merchant told.
   */
  | { action: 'review_receipt'; reason: 'amount_mismatch' | 'amount_missing' }
  /** `notify`: the customer and merchant are told, unless the invoice is paid or cancelled by then. */
  | { action: 'mark_failed'; notify: boolean }
  | { action: 'mark_paid' }
  /** The money moved for an invoice already paid (another attempt): recorded with its receipt, for a refund. */
  | { action: 'paid_twice' }
  /** A payment (or second payment) recorded without its receipt, from an STK query, gets it now; nobody is told again. */
  | { action: 'add_receipt' };

/**
 * What several results do, in order, exactly as if each were applied alone after the ones
 * before it: an invoice paid by an earlier item is paid for the later ones, a receipt taken
 * by an earlier item is taken for the later ones. `invoiceStatus` holds each invoice's
 * status (read under lock), `receiptOwners` the attempt that already holds each receipt.
 */
export function planResults(
  items: readonly ResultItem[],
  invoiceStatus: ReadonlyMap<string, InvoiceStatus>,
  receiptOwners: ReadonlyMap<string, string>,
): ResultPlan[] {
  const invoices = new Map(invoiceStatus);
  const owners = new Map(receiptOwners);
  const attempts = new Map<string, AttemptState>();
  /** The receipt is free for this attempt (and now its own), or held by another one. */
  const claimReceipt = (receipt: string, attemptId: string): boolean => {
    const owner = owners.get(receipt);
    if (owner !== undefined && owner !== attemptId) return false;
    owners.set(receipt, attemptId);
    return true;
  };
  return items.map((item): ResultPlan => {
    const state = attempts.get(item.attemptId) ?? item.attempt;
    const { receipt } = item.result;
    // A payment recorded from an STK query has no receipt (the query gives none): the callback
    // that comes after it adds the receipt, and nothing else happens again.
    if ((state.status === 'succeeded' || state.paidTwice) && state.receipt === null && item.result.resultCode === 0 && receipt !== null) {
      // Only a callback for the amount asked is this payment's receipt (as for any success).
      const { amount } = item.result;
      if (amount === null ? item.amountRequired : amount !== item.askedAmount) {
        const reason = amount === null ? 'amount_missing' : 'amount_mismatch';
        attempts.set(item.attemptId, { ...state, amountDisputed: state.amountDisputed || reason === 'amount_mismatch' });
        return { action: 'review_receipt', reason };
      }
      if (!claimReceipt(receipt, item.attemptId)) return { action: 'ignore', why: 'receipt_taken' };
      attempts.set(item.attemptId, { ...state, receipt });
      return { action: 'add_receipt' };
    }
    // Already reported for a refund once: never again.
    if (state.paidTwice) return { action: 'ignore', why: item.result.resultCode === 0 ? 'duplicate' : 'not_pending' };
    const decision = decideResult(state.status, item.result, item.askedAmount, { amountRequired: item.amountRequired, amountDisputed: state.amountDisputed });
    switch (decision.action) {
      case 'ignore':
        return decision;
      case 'review':
        attempts.set(item.attemptId, { ...state, status: 'failed', amountDisputed: state.amountDisputed || decision.reason === 'amount_mismatch' });
        return decision;
      case 'mark_failed': {
        attempts.set(item.attemptId, { ...state, status: 'failed' });
        const invoice = invoices.get(item.invoiceId);
        return { action: 'mark_failed', notify: invoice !== 'paid' && invoice !== 'cancelled' };
      }
      case 'mark_paid': {
        // The same M-PESA receipt cannot pay two attempts.
        if (receipt !== null && !claimReceipt(receipt, item.attemptId)) return { action: 'ignore', why: 'receipt_taken' };
        if (invoices.get(item.invoiceId) === 'paid') {
          attempts.set(item.attemptId, { ...state, status: 'failed', paidTwice: true, receipt: receipt ?? state.receipt });
          return { action: 'paid_twice' };
        }
        invoices.set(item.invoiceId, 'paid');
        attempts.set(item.attemptId, { ...state, status: 'succeeded', paidTwice: false, receipt: receipt ?? state.receipt });
        return { action: 'mark_paid' };
      }
    }
  });
}

export function failureReason(resultCode: number): PaymentFailureReason {
  switch (resultCode) {
    case 1032:
      return 'cancelled';
    case 1037:
      return 'unreachable';
    case 2001:
      return 'wrong_pin';
    case 1:
      return 'insufficient_funds';
    case 2:
    case 3:
    case 4:
    case 8:
      return 'limit';
    case 1019:
      return 'expired';
    default:
      return 'other';
  }
}
