/**
 * Payment rules, pure: when a new M-PESA prompt may start, what a result means for an
 * attempt, and how Daraja's result codes read to a merchant.
 */
import type { InvoiceStatus, PaymentAttemptStatus } from '../db/schema.js';
import type { PaymentFailureReason } from './texts.types.js';

/** A new prompt is refused while an earlier one for the same invoice is this young and pending. */
export const PROMPT_COOLDOWN_MS = 2 * 60 * 1000;
/** Attempts still pending this long are asked about (STK query). */
export const RECONCILE_AFTER_MS = 3 * 60 * 1000;
/** Attempts with no answer this long are expired. */
export const EXPIRE_AFTER_MS = 30 * 60 * 1000;

export type PaymentRequestDecision = 'start' | 'already_paid' | 'cancelled' | 'prompt_pending';

export function decidePaymentRequest(
  invoiceStatus: InvoiceStatus,
  latestAttempt: { status: PaymentAttemptStatus; createdAt: Date } | undefined,
  now: Date,
): PaymentRequestDecision {
  if (invoiceStatus === 'paid') return 'already_paid';
  if (invoiceStatus === 'cancelled') return 'cancelled';
  if (latestAttempt !== undefined && latestAttempt.status === 'pending' && now.getTime() - latestAttempt.createdAt.getTime() < PROMPT_COOLDOWN_MS) {
    return 'prompt_pending';
  }
  return 'start';
}

export type ResultDecision =
  | { action: 'mark_paid' }
  | { action: 'review'; reason: 'amount_mismatch' | 'amount_missing' }
  | { action: 'mark_failed' }
  | { action: 'ignore'; why: 'duplicate' | 'success_recorded' | 'not_pending' };

/**
 * What a result (callback or query) does to an attempt. A success always counts, even on an
 * attempt already marked failed or expired (the money moved); a failure only ends a pending
 * attempt; nothing ever overwrites a recorded success.
 */
export function decideResult(
  attemptStatus: PaymentAttemptStatus,
  result: { resultCode: number; amount: number | null },
  askedAmount: number,
  options: { amountRequired: boolean } = { amountRequired: false },
): ResultDecision {
  if (attemptStatus === 'succeeded') return { action: 'ignore', why: result.resultCode === 0 ? 'duplicate' : 'success_recorded' };
  if (result.resultCode === 0) {
    if (result.amount === null && options.amountRequired) return { action: 'review', reason: 'amount_missing' };
    if (result.amount !== null && result.amount !== askedAmount) return { action: 'review', reason: 'amount_mismatch' };
    return { action: 'mark_paid' };
  }
  return attemptStatus === 'pending' ? { action: 'mark_failed' } : { action: 'ignore', why: 'not_pending' };
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
