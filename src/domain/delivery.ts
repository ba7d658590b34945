/**
 * The delivery rules, pure: which route a message takes, what a failure leads to, how
 * long to wait before trying again, and how out-of-order status reports combine.
 */
import type { OutboundStatus } from '../db/schema.js';
import type { OutboundKind, TemplateKind } from './outbound.js';

/** Meta counts 24 h from the user's last message; keep a margin for clock skew and queueing. */
export const WINDOW_MS = 24 * 60 * 60 * 1000 - 5 * 60 * 1000;

export type Route =
  | { channel: 'whatsapp'; mode: 'freeform' }
  | { channel: 'whatsapp'; mode: 'template'; templateName: string }
  | { channel: 'sms'; reason: string };

export function insideWindow(lastInboundAt: Date | null, now: Date): boolean {
  return lastInboundAt !== null && now.getTime() - lastInboundAt.getTime() < WINDOW_MS;
}

export function chooseRoute(input: {
  kind: OutboundKind;
  channel: 'whatsapp' | 'sms' | null;
  lastInboundAt: Date | null;
  now: Date;
  templates: Readonly<Record<TemplateKind, string | undefined>>;
  hasTemplateParameters: boolean;
}): Route {
  if (input.channel === 'sms') return { channel: 'sms', reason: 'fell_back' };
  if (insideWindow(input.lastInboundAt, input.now)) return { channel: 'whatsapp', mode: 'freeform' };
  const templateName = input.kind === 'reply' || input.kind === 'notice' ? undefined : input.templates[input.kind];
  if (templateName !== undefined && input.hasTemplateParameters) return { channel: 'whatsapp', mode: 'template', templateName };
  return { channel: 'sms', reason: 'outside_window_no_template' };
}

export type FailureDecision = { action: 'retry'; delaySeconds: number } | { action: 'fallback'; reason: string } | { action: 'fail'; reason: string };

/**
 * The longest wait before a retry, in seconds: the backoff's cap, and the bound the stuck sweep
 * (STUCK_AFTER_MINUTES in src/delivery/outbox.ts) assumes. Nothing here waits longer, whatever a
 * provider's Retry-After says: the wait holds up every later message to the same person.
 */
export const RETRY_CAP_SECONDS = 300;

/** Exponential backoff with full jitter; `random` in [0, 1) is passed in to keep this pure. */
export function backoffSeconds(attempt: number, random: number, baseSeconds = 2, capSeconds = RETRY_CAP_SECONDS): number {
  const ceiling = Math.min(capSeconds, baseSeconds * 2 ** Math.max(0, attempt - 1));
  return Math.round((ceiling / 2 + (random * ceiling) / 2) * 10) / 10;
}

export type FailureFacts = { retryable: boolean; code: string | undefined; retryAfterSeconds: number | undefined; httpStatus?: number | undefined };

/** A Retry-After worth reading: NaN, negative or missing counts as none (0); +Infinity stays (longer than any cap). */
function usableRetryAfter(retryAfterSeconds: number | undefined): number {
  return retryAfterSeconds !== undefined && retryAfterSeconds > 0 ? retryAfterSeconds : 0;
}

/** Whether the provider asks for a longer wait than RETRY_CAP_SECONDS (then WhatsApp gives way to SMS). */
function retryAfterBeyondCap(retryAfterSeconds: number | undefined, capSeconds = RETRY_CAP_SECONDS): boolean {
  return usableRetryAfter(retryAfterSeconds) > capSeconds;
}

/**
 * The wait before a retry, never more than `capSeconds` (default RETRY_CAP_SECONDS, 300 s):
 * - the backoff, when the provider's Retry-After (`after`) is missing, 0, negative, NaN or not
 *   longer than the backoff;
 * - backoff < after <= cap: `after` spread over up to half again, clipped at the cap. The wait
 *   is in [after, min(1.5 * after, cap)]: never before the provider's time, never over the cap
 *   (the spread narrows as `after` nears the cap: none at exactly the cap);
 * - after > cap (callers may not honour it; afterWhatsAppFailure falls back to SMS instead): the
 *   wait is in [max(backoff, cap / 1.5), cap], i.e. within [200, 300] s by default.
 * Without the spread every message limited in the same burst would retry in the same second,
 * and be limited again. Rounded to a tenth of a second, then kept within those bounds.
 */
export function retryDelaySeconds(retryAfterSeconds: number | undefined, attempt: number, random: number, capSeconds = RETRY_CAP_SECONDS): number {
  const backoff = backoffSeconds(attempt, random, 2, capSeconds);
  const after = usableRetryAfter(retryAfterSeconds);
  if (after <= backoff) return backoff;
  const low = after > capSeconds ? Math.max(backoff, capSeconds / 1.5) : after;
  const high = Math.min(after * 1.5, capSeconds);
  const spread = Math.round((low + random * (high - low)) * 10) / 10;
  return Math.min(high, Math.max(low, spread));
}

/**
 * After a WhatsApp send fails: retry what can be retried while attempts remain, otherwise SMS.
 * A rate limit whose Retry-After is longer than RETRY_CAP_SECONDS goes to SMS at once
 * (`whatsapp_rate_limited`) rather than hold this message, and every later one to the same
 * person, for that long.
 */
export function afterWhatsAppFailure(error: FailureFacts, attempt: number, maxAttempts: number, random: number): FailureDecision {
  if (error.retryable && attempt < maxAttempts) {
    if (retryAfterBeyondCap(error.retryAfterSeconds)) return { action: 'fallback', reason: 'whatsapp_rate_limited' };
    return { action: 'retry', delaySeconds: retryDelaySeconds(error.retryAfterSeconds, attempt, random) };
  }
  return { action: 'fallback', reason: error.retryable ? 'whatsapp_retries_exhausted' : `whatsapp_error_${error.code ?? 'unknown'}` };
}

/**
 * Africa's Talking answers about our account, not about the person: 401 risk hold, 402 sender
 * id not valid, 405 balance too low (a recipient's statusCode), or HTTP 401 (the API key
 * refused). The message still fails at once, as for any final answer: waiting for a top-up
 * would hold the person's later messages (WhatsApp replies included) behind it for as long as
 * the account stays broken. It is told apart so that the log can call a person.
 */
const SMS_ACCOUNT_CODES: ReadonlySet<string> = new Set(['401', '402', '405']);
export const isSmsAccountProblem = (error: FailureFacts): boolean => (error.code !== undefined && SMS_ACCOUNT_CODES.has(error.code)) || error.httpStatus === 401;

/** After an SMS send fails: retry gateway trouble while attempts remain; otherwise the message failed. */
export function afterSmsFailure(error: FailureFacts, attempt: number, maxAttempts: number, random: number): FailureDecision {
  if (error.retryable && attempt < maxAttempts) {
    return { action: 'retry', delaySeconds: retryDelaySeconds(error.retryAfterSeconds, attempt, random) };
  }
  return { action: 'fail', reason: `sms_error_${error.code ?? 'unknown'}` };
}


const rank: Record<OutboundStatus, number> = { queued: 0, sending: 0, sent: 1, delivered: 2, read: 3, failed: 1.5 };

/**
 * Combines a reported status with the stored one. Reports arrive out of order: a late
 * `delivered` never overwrites `read`; `failed` overrides `sent` (Meta accepted, then could
 * not deliver) but not `delivered`/`read`; a `delivered`/`read` after `failed` wins.
 * Returns the new status, or null for no change.
 */
export function combineStatus(current: OutboundStatus, reported: 'sent' | 'delivered' | 'read' | 'failed'): OutboundStatus | null {
  if (current === reported) return null;
  if (reported === 'failed') return current === 'delivered' || current === 'read' ? null : 'failed';
  // Meta may report `failed` before a `delivered` it sent earlier: the delivery is the fact.
  // (A message that fell back to SMS no longer takes WhatsApp reports at all.)
  if (current === 'failed') return reported === 'sent' ? null : reported;
  return rank[reported] > rank[current] ? reported : null;
}
