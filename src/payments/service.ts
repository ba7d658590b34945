/**
 * M-PESA payments: attempts, STK pushes, results (callbacks and queries through one code
 * path), reconciliation and reminders.
 *
 * Money rules (ARCHITECTURE.md): one attempt row per push, an unguessable per-attempt token
 * in the CallBackURL (only its hash is stored, and the token itself exists only in memory
 * and in the URL sent to Safaricom), a push is never sent twice for one attempt, a success
 * marks the invoice paid once, and nothing overwrites a recorded success.
 */
import { anyOf, jsonb, rowsOf } from '../db/json.js';
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import { createBatcher } from '../batch.js';
import { z } from 'zod';
import type { Config } from '../config.js';
import type { Database, PaymentAttemptStatus, PaymentAttemptsTable, PaymentInitiator } from '../db/schema.js';
import { sha256Hex } from '../security.js';
import type { OutboundDraft } from '../domain/outbound.js';
import { dueDateFor, nairobiMidnight, nairobiToday } from '../domain/invoice.js';
import { EXPIRE_AFTER_MS, PUSH_STALE_AFTER_MS, RECONCILE_AFTER_MS, decidePaymentRequest, expiresAfterQuery, failureReason, planResults, type PaymentRequestDecision, type ResultPlan, type UnsettledQuery } from '../domain/payment.js';
import { formatAmount, formatInvoiceNumber } from '../domain/parse.js';
import { payButtonId, templateName, texts } from '../domain/texts.js';
import { NOTHING_WRITTEN, type AlongsideWrite, type Outbox, type Written } from '../delivery/outbox.js';
import { NoJobData, scheduledJob, type JobDefinition, type JobQueue } from '../jobs/queue.js';
import { afterFailedTry, retryJob, scheduleRetry, type RetryDeps, type RetryJob } from '../inbound/retry.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { DarajaClient, StkPushAccepted } from '../providers/mpesa/client.js';
import type { StkCallbackResult } from '../providers/mpesa/schemas.js';
import { ProviderError, TransportError, isDeliveryError, type DeliveryError } from '../providers/errors.js';

type Trx = Transaction<Database>;


/** What a callback (or, without amount and receipt, a query) says about an attempt. */
export type PaymentResult = Pick<StkCallbackResult, 'checkoutRequestId' | 'resultCode' | 'resultDesc' | 'amount' | 'receipt' | 'phone'>;

export type CallbackOutcome =
  | { status: 'applied' | 'duplicate' | 'review' | 'ignored' }
  /** Could not be applied now (the database refused it): kept, and applied again by its retry job. */
  | { status: 'kept' }
  | { status: 'rejected'; reason: 'unknown_token' | 'checkout_mismatch' };

export type Payments = {
  /** Inside the caller's transaction: starts an attempt (and its push job) unless the rules say no. */
  requestPayment(trx: Trx, invoiceId: string, initiatedBy: PaymentInitiator): Promise<PaymentRequestDecision>;
  /**
   * Sends the STK push of one attempt (the job's work). Daraja's "not now" (SAFE_TO_RETRY)
   * throws, for the job to try again, except on its `lastTry`: then it is a refusal like any other.
   */
  push(attemptId: string, options?: { lastTry?: boolean }): Promise<'pushed' | 'not_pending' | 'failed'>;
  /** A callback whose token (from the URL) and body were read: applies it, or says why not. */
  handleCallback(token: string, result: PaymentResult): Promise<CallbackOutcome>;
  /**
   * A callback whose body did not read (`raw`, why not in `reason`): stored as rejected for a
   * person if its token names an attempt (it may carry an M-PESA receipt number), else refused
   * like any callback with an unknown token. Changes no attempt and no invoice.
   */
  storeUnreadableCallback(token: string, raw: string, reason: string): Promise<'stored' | 'duplicate' | 'unknown_token'>;
  /**
   * Asks M-PESA about every attempt still pending `olderThanMs` (default: 3 minutes) after its
   * push started (never pushed: after it was asked for) and not asked within its pause (none
   * with `askAgainNow`: the simulator's "ask now"); applies answers like callbacks and expires
   * those M-PESA still calls unfinished 30 minutes after their push, or that no query could
   * reach for a day.
   */
  reconcile(options?: { olderThanMs?: number; askAgainNow?: boolean }): Promise<{ queried: number; applied: number; expired: number }>;
  /** Applies a callback kept for retry (the retry job): processed, kept again, parked as dead, or nothing to do. */
  retryCallback(eventId: string): Promise<'processed' | 'retrying' | 'dead' | 'not_pending'>;
  /** The retry job of kept callbacks (its data names the inbound event). */
  readonly callbackRetryJob: RetryJob;
  /** Queues the due-tomorrow and due-today reminders not sent yet. */
  sendReminders(): Promise<number>;
  readonly jobs: readonly JobDefinition[];
  /**
   * Shutdown has begun: a write after Daraja's answer that the database refuses is tried for
   * STOP_PATIENCE_MS more (a wait under way is cut short) and then given up, with its error log
   * (what a person needs to finish it), rather than cut off by the kill timeout without one.
   */
  beginStop(): void;
};

export type PaymentsDeps = {
  db: Kysely<Database>;
  jobs: Pick<JobQueue, 'enqueue'>;
  outbox: Pick<Outbox, 'enqueue' | 'dispatchSoon' | 'enqueueClaimed' | 'dispatchWritten'>;
  daraja: DarajaClient;
  config: Pick<Config, 'mpesa'>;
  metrics: Metrics;
  logger: Logger;
  now?: () => Date;
  random?: () => number;
  /** How long one reconciliation run may take (tests shorten it); RECONCILE_BUDGET_MS by default. */
  reconcileBudgetMs?: number;
  /** How long a write after Daraja's answer to a push is tried while the database refuses (tests shorten it); PUSH_WRITE_PATIENCE_MS by default. */
  pushWritePatienceMs?: number;
};

/**
 * A callback kept for retry, as its inbound event stores it: the hash of its URL token (the
 * attempt's own column holds the same) and what it said. Read back through this schema.
 */
const KeptCallback = z.object({
  tokenHash: z.string().regex(/^[0-9a-f]{64}$/),
  result: z.object({
    checkoutRequestId: z.string(),
    resultCode: z.number().int(),
    resultDesc: z.string(),
    amount: z.number().nullable(),
    receipt: z.string().nullable(),
    phone: z.string().nullable(),
  }),
});

/** A callback's identity among inbound events: the same key twice is the same callback. */
function callbackKey(result: PaymentResult): string {
  return `${result.checkoutRequestId}:${result.resultCode}:${result.receipt ?? ''}:${result.amount ?? ''}`;
}

const PushJobData = z.object({ attemptId: z.uuid() });
/** Daraja refusals after which a new push cannot double a prompt: spike arrest, quota, "already in process". */
const SAFE_TO_RETRY = new Set(['500.003.02', '500.003.03', '500.001.1001']);
/** How an attempt whose prompt was never sent, because it was asked for too long ago (PUSH_STALE_AFTER_MS), reads. */
const STALE_PROMPT = `not prompted: asked for more than ${PUSH_STALE_AFTER_MS / 60_000} minutes before its push could start`;
/** The review reason of a second payment of a paid invoice (it starts the text). */
const PAID_TWICE = 'paid_twice';
/** The review reason of a callback that said another amount moved (it starts the text). */
const AMOUNT_MISMATCH = 'amount_mismatch';
/** Attempts claimed per statement by reconciliation. */
const RECONCILE_PAGE = 50;
/** STK queries in flight at once (Daraja arrests spikes). */
const QUERY_CONCURRENCY = 4;
/**
 * A reconciliation run asks no new query after this long (it runs every minute; the next run
 * goes on). The queries in flight then end within their own timeout (MPESA_TIMEOUT_MS).
 */
const RECONCILE_BUDGET_MS = 45_000;
/**
 * What the push learnt from Daraja (the CheckoutRequestID of a prompt now on the phone; a "not
 * now" that frees the attempt for its job's retry) is written again and again (waits doubling
 * from 0.2 s to 5 s) for this long when the database refuses. Lost, it strands the attempt:
 * the claim of every later try needs push_started_at null, and reconciliation cannot ask
 * about a prompt without its CheckoutRequestID (the money may move and its callback be lost).
 * As RECORD_SENT_PATIENCE_MS in src/delivery/outbox.ts: the first statement that works once the
 * database is back is usually this one.
 */
export const PUSH_WRITE_PATIENCE_MS = 5 * 60_000;
/**
 * Once the service is stopping, such a write is tried for this much longer (at most
 * STOP_WAIT_MS apart), then given up with its error log: the job queue's stop waits
 * SHUTDOWN_TIMEOUT_MS / 2 (4 s by default) for the running jobs, and the process is killed
 * soon after, without the log that names the CheckoutRequestID for a person. A failover
 * during a deploy usually drops a pooled connection once: the next try goes.
 */
export const STOP_PATIENCE_MS = 1_500;
const STOP_WAIT_MS = 250;

/**
 * Whether a failed push proves that nothing reached the phone: Daraja (or the client, before
 * sending) refused it with a code, or M-PESA is not configured. A timeout, a reset or a 5xx
 * proves nothing, with a code or without (a gateway's bare 502, Daraja's own 500.xxx
 * "Internal Server Error" answered after the request may have gone through): the prompt may
 * be on the phone. (Daraja's "not now" 5xx codes, SAFE_TO_RETRY, are handled before this.)
 */
function definitelyRefused(error: DeliveryError): boolean {
  if (error instanceof TransportError) return error.reason === 'not_configured';
  if (error.code === undefined) return false;
  if (SAFE_TO_RETRY.has(error.code)) return true;
  return !(error.httpStatus !== undefined && error.httpStatus >= 500) && !/^5\d\d\./.test(error.code);
}


/**
 * Whether a database error says the statement itself is wrong, so the same statement can only
 * fail again: SQLSTATE classes 22 (data exception), 23 (integrity constraint violation, e.g. a
 * CheckoutRequestID already recorded for another attempt), 42 (syntax error or access rule
 * violation), 0A (feature not supported). Anything else (a lost connection, with no SQLSTATE;
 * 08, 40, 53, 57; an error raised by a trigger) may pass on a later try.
 */
function retryCannotFix(error: unknown): boolean {
  const code = typeof error === 'object' && error !== null && 'code' in error ? (error as { code: unknown }).code : undefined;
  return typeof code === 'string' && /^(22|23|42|0A)[0-9A-Z]{3}$/.test(code);
}

export function createPayments(deps: PaymentsDeps): Payments {
  const { db, metrics, logger } = deps;
  const stopping = new AbortController();
  /** When beginStop was called (performance.now()). */
  let stoppedAt: number | undefined;
  const now = deps.now ?? (() => new Date());
  const pushWritePatienceMs = deps.pushWritePatienceMs ?? PUSH_WRITE_PATIENCE_MS;
  const retrying: RetryDeps = { jobs: deps.jobs, metrics, logger, maxAttempts: deps.config.mpesa.callbackMaxAttempts, random: deps.random ?? Math.random };

  const pushJob: JobDefinition<typeof PushJobData> = {
    name: 'stk-push',
    schema: PushJobData,
    retryLimit: 3,
    retryDelaySeconds: 20,
    async handle({ attemptId }, { retryCount }) {
      // The job's last try: a "not now" from Daraja then ends the attempt (the customer who
      // asked is told to try again) instead of leaving it pending until reconciliation gives up.
      await push(attemptId, { lastTry: retryCount >= (pushJob.retryLimit ?? 0) });
    },
  };
  const reconcileJob = scheduledJob('payments-reconcile', () => reconcile());
  const callbackRetryJob = retryJob('retry-stk-callback', (eventId) => retryCallback(eventId));
  const remindersJob: JobDefinition<NoJobData> = {
    name: 'invoice-reminders',
    schema: NoJobData,
    retryLimit: 2,
    async handle() {
      await sendReminders();
    },
  };

  /** Invoices with their merchant and both languages: what every message needs. `lock` locks the invoices (in id order). */
  async function invoiceFactsMany(trx: Trx, invoiceIds: readonly string[], options: { lock: boolean }) {
    const query = trx
      .selectFrom('invoices')
      .innerJoin('merchants', 'merchants.id', 'invoices.merchant_id')
      .leftJoin('conversations as customer', 'customer.phone', 'invoices.customer_phone')
      .leftJoin('conversations as merchant_conversation', 'merchant_conversation.phone', 'merchants.phone')
      .select([
        'invoices.id',
        'invoices.number',
        'invoices.amount',
        'invoices.status',
        'invoices.description',
        'invoices.due_date',
        'invoices.customer_phone',
        'merchants.phone as merchant_phone',
        'merchants.business_name',
        'customer.language as customer_language',
        'merchant_conversation.language as merchant_language',
      ])
      .where(anyOf('invoices.id', [...new Set(invoiceIds)], 'uuid'))
      .orderBy('invoices.id');
    const rows = await (options.lock ? query.forUpdate('invoices') : query).execute();
    return new Map(rows.map((row) => [row.id, row]));
  }

  /**
   * The invoice, its merchant and both languages, the invoice locked: a notice that depends on
   * its status ("not paid yet") is not written beside a payment committing meanwhile (the
   * callback path locks attempts, then invoices, as every caller here does).
   */
  async function invoiceFacts(trx: Trx, invoiceId: string) {
    const facts = (await invoiceFactsMany(trx, [invoiceId], { lock: true })).get(invoiceId);
    if (facts === undefined) throw new Error(`invoice ${invoiceId} not found`);
    return facts;
  }

  async function requestPayment(trx: Trx, invoiceId: string, initiatedBy: PaymentInitiator): Promise<PaymentRequestDecision> {
    const invoice = await trx.selectFrom('invoices').select(['id', 'status', 'amount', 'customer_phone']).where('id', '=', invoiceId).forUpdate().executeTakeFirstOrThrow();
    const latest = await trx
      .selectFrom('payment_attempts')
      .select(['status', 'created_at', 'push_started_at', 'push_unclear'])
      .where('invoice_id', '=', invoiceId)
      .orderBy('created_at', 'desc')
      .limit(1)
      .executeTakeFirst();
    const decision = decidePaymentRequest(
      invoice.status,
      latest === undefined ? undefined : { status: latest.status, createdAt: latest.created_at, pushStartedAt: latest.push_started_at, pushUnclear: latest.push_unclear },
      now(),
    );
    if (decision !== 'start') return decision;
    const attempt = await trx
      .insertInto('payment_attempts')
      .values({
        invoice_id: invoiceId,
        amount: invoice.amount,
        phone: invoice.customer_phone,
        // Replaced by the real token's hash when the push starts; this one is never revealed.
        callback_token_hash: sha256Hex(randomBytes(32).toString('hex')),
        initiated_by: initiatedBy,
        created_at: now(),
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    await deps.jobs.enqueue(trx, pushJob, { attemptId: attempt.id });
    metrics.paymentAttempts.inc({ outcome: 'requested' });
    return 'start';
  }

  async function notify(trx: Trx, drafts: OutboundDraft[]): Promise<string[]> {
    return deps.outbox.enqueue(trx, drafts);
  }

  /**
   * Tells the customer who asked (PAY) that the invoice's prompt did not start (`unclear`: it may
   * have), in the caller's transaction; with `unlessSettled`, not once the invoice is paid or
   * cancelled. Returns the ids of the messages written.
   */
  async function promptNotStarted(trx: Trx, invoiceId: string, outcome: 'refused' | 'unclear', options: { unlessSettled?: boolean } = {}): Promise<string[]> {
    const facts = await invoiceFacts(trx, invoiceId);
    if (options.unlessSettled === true && (facts.status === 'paid' || facts.status === 'cancelled')) return [];
    const t = texts[facts.customer_language ?? 'en'];
    return notify(trx, [{ recipient: facts.customer_phone, kind: 'notice', invoiceId: facts.id, payload: { message: t.promptNotStarted(facts.number, outcome, facts.id) } }]);
  }

  /** The attempt whose callback token hashes to `tokenHash`: what a callback's token names. */
  function attemptNamedBy(q: Kysely<Database> | Trx, tokenHash: string) {
    return q.selectFrom('payment_attempts').select(['id', 'checkout_request_id']).where('callback_token_hash', '=', tokenHash).executeTakeFirst();
  }

  /**
   * A write the push must not lose to a database blip once Daraja has answered (PUSH_WRITE_PATIENCE_MS):
   * tried until it goes or the patience runs out, each failure logged (the error's message only:
   * the attempt's id names it, and no phone number reaches the logs). Gives up with an error log
   * (`context` says what a person needs) and the last error.
   */
  async function writePatiently<T>(attemptId: string, what: string, write: () => Promise<T>, context: Record<string, string> = {}): Promise<T> {
    const giveUpAt = performance.now() + pushWritePatienceMs;
    const errorText = (error: unknown) => (error instanceof Error ? error.message : String(error)).slice(0, 300);
    let waitMs = 200;
    for (let tries = 1; ; tries += 1) {
      try {
        const written = await write();
        if (tries > 1) logger.info({ attempt_id: attemptId, tries }, `${what}: written after the database refused`);
        return written;
      } catch (error) {
        // Stopping (since before this try, or during it): short waits, until STOP_PATIENCE_MS after the stop.
        const until = stoppedAt === undefined ? giveUpAt : Math.min(giveUpAt, stoppedAt + STOP_PATIENCE_MS);
        if (stoppedAt !== undefined) waitMs = Math.min(waitMs, STOP_WAIT_MS);
        const why = retryCannotFix(error)
          ? 'the database refused it in a way no retry can fix'
          : performance.now() + waitMs >= until
            ? stoppedAt !== undefined
              ? 'the database refused, and the service is stopping'
              : 'the database refused for too long'
            : undefined;
        if (why !== undefined) {
          logger.error({ attempt_id: attemptId, tries, error: errorText(error), ...context }, `${what}: never written, ${why}`);
          throw error;
        }
        logger.warn({ attempt_id: attemptId, tries, error: errorText(error) }, `${what}: the database refused; trying again`);
      }
      // A stop cuts a long wait short; after it the tries go on at short waits for a little longer.
      await delay(waitMs, undefined, stoppedAt === undefined ? { signal: stopping.signal } : {}).catch(() => undefined);
      waitMs = Math.min(waitMs * 2, 5_000);
    }
  }

  async function push(attemptId: string, options: { lastTry?: boolean } = {}): Promise<'pushed' | 'not_pending' | 'failed'> {
    const token = randomBytes(32).toString('base64url');
    // Asked for before this, the prompt is stale (PUSH_STALE_AFTER_MS): not sent any more.
    const staleBefore = new Date(now().getTime() - PUSH_STALE_AFTER_MS);
    // The invoice's number comes with the claim: a statement of its own after the claim could
    // fail, and leave the attempt taken (push_started_at set) with no prompt sent, for good.
    const claimed = await db
      // Never prompt for an invoice paid or cancelled while this push waited (e.g. a job retry).
      // Its status is read locked (FOR SHARE): a cancel or a payment in progress holds the invoice
      // (FOR UPDATE), so the claim waits for it to commit and then reads its new status. Read
      // through UPDATE ... FROM alone the invoice is not locked: a claim between a cancel's status
      // update and its expiry of the attempts not yet pushed read 'sent', took the attempt (which
      // the cancel then left alone, as pushed), and the prompt went out for a cancelled invoice.
      // Not FOR KEY SHARE: that does not wait for an update of the status. Lock order: the
      // invoice, then the attempt, as a cancel and requestPayment take them; the callback path
      // (attempt, then invoice) has no callback for an attempt not pushed: its token reaches
      // M-PESA with the push (a push released after "not now" was refused, so none comes).
      .with('invoice', (q) =>
        q
          .selectFrom('invoices')
          .select(['invoices.id', 'invoices.number'])
          .where('invoices.id', '=', (eb) => eb.selectFrom('payment_attempts').select('payment_attempts.invoice_id').where('payment_attempts.id', '=', attemptId))
          .where('invoices.status', 'not in', ['paid', 'cancelled'])
          .forShare(),
      )
      .updateTable('payment_attempts')
      .from('invoice')
      // The service's clock, like created_at: the 2-minute rule compares it with now().
      .set({ push_started_at: now(), callback_token_hash: sha256Hex(token), updated_at: sql`now()` })
      .whereRef('invoice.id', '=', 'payment_attempts.invoice_id')
      .where('payment_attempts.id', '=', attemptId)
      .where('payment_attempts.status', '=', 'pending')
      .where('payment_attempts.push_started_at', 'is', null)
      .where('payment_attempts.created_at', '>', staleBefore)
      // Nor once a newer attempt exists for the invoice (started while this one waited for a
      // retry): one prompt at a time, or the customer could pay twice.
      .where(({ not, exists, selectFrom }) =>
        not(
          exists(
            selectFrom('payment_attempts as newer')
              .select('newer.id')
              .whereRef('newer.invoice_id', '=', 'payment_attempts.invoice_id')
              .whereRef('newer.created_at', '>', 'payment_attempts.created_at'),
          ),
        ),
      )
      .returning(['payment_attempts.invoice_id', 'payment_attempts.amount', 'payment_attempts.phone', 'payment_attempts.initiated_by', 'invoice.number'])
      .executeTakeFirst();
    if (claimed === undefined) {
      const ids = await db.transaction().execute(async (trx) => {
        const ended = await trx
          .updateTable('payment_attempts')
          .set({
            status: 'expired',
            result_desc: sql<string>`case when created_at <= ${staleBefore} then ${STALE_PROMPT} else 'invoice paid or cancelled, or a newer prompt started, before the prompt' end`,
            completed_at: sql`now()`,
            updated_at: sql`now()`,
          })
          .where('id', '=', attemptId)
          .where('status', '=', 'pending')
          .where('push_started_at', 'is', null)
          .returning(['invoice_id', 'initiated_by', 'result_desc'])
          .executeTakeFirst();
        if (ended === undefined || ended.result_desc !== STALE_PROMPT) return [];
        metrics.paymentAttempts.inc({ outcome: 'push_stale' });
        logger.warn({ attempt_id: attemptId }, 'stk push not sent: asked for too long ago (its job waited out an outage)');
        // Only the customer who asked (PAY) waits for a prompt; an invoice's own prompt or a
        // merchant's reminder leaves the invoice's Pay button with the customer.
        if (ended.initiated_by !== 'customer') return [];
        return promptNotStarted(trx, ended.invoice_id, 'refused', { unlessSettled: true });
      });
      deps.outbox.dispatchSoon(ids);
      return 'not_pending';
    }
    const reference = formatInvoiceNumber(claimed.number);
    const callbackBase = deps.config.mpesa.callbackUrl?.replace(/\/+$/, '') ?? '';
    let accepted: StkPushAccepted;
    try {
      accepted = await deps.daraja.stkPush({
        amount: Number(claimed.amount),
        phone: claimed.phone,
        accountReference: reference,
        description: reference,
        callbackUrl: `${callbackBase}/${token}`,
      });
    } catch (error) {
      if (!isDeliveryError(error)) throw error;
      // Only Daraja's own "not now" codes prove nothing reached the phone; a bare 5xx from a
      // gateway is as unclear as a timeout, so it keeps this attempt's token and ends here.
      const refusedForNow = options.lastTry !== true && error instanceof ProviderError && error.code !== undefined && SAFE_TO_RETRY.has(error.code);
      if (refusedForNow) {
        // Safaricom said no (busy, spike arrest): nothing reached the phone, so a later try is
        // safe, once the attempt is free again: the job's retry can claim it only then.
        await writePatiently(attemptId, 'releasing an stk push refused for now, for its retry', () =>
          db.updateTable('payment_attempts').set({ push_started_at: null }).where('id', '=', attemptId).execute(),
        );
        metrics.paymentAttempts.inc({ outcome: 'push_retry' });
        throw error;
      }
      // Final refusal, or no answer (the prompt may or may not have reached the phone: a
      // callback with this attempt's token is still honoured; reconciliation cannot ask
      // without a CheckoutRequestID, so the attempt ends here). Without a clear answer the
      // attempt is marked `push_unclear`: no new prompt for 2 minutes from this push.
      const refused = definitelyRefused(error);
      const ids = await db.transaction().execute(async (trx) => {
        const ended = await trx
          .updateTable('payment_attempts')
          .set({
            status: 'failed',
            push_unclear: !refused,
            result_desc: `${refused ? 'push not accepted' : 'no answer to the push'}: ${error.message}`.slice(0, 300),
            completed_at: sql`now()`,
            updated_at: sql`now()`,
          })
          .where('id', '=', attemptId)
          .where('status', '=', 'pending')
          .returning('id')
          .executeTakeFirst();
        // A callback may have settled the attempt meanwhile: then there is nothing to say.
        if (ended === undefined || claimed.initiated_by !== 'customer') return [];
        // Unclear: the customer is not told the prompt failed, only what to do either way.
        return promptNotStarted(trx, claimed.invoice_id, refused ? 'refused' : 'unclear');
      });
      deps.outbox.dispatchSoon(ids);
      metrics.paymentAttempts.inc({ outcome: 'push_failed' });
      logger.warn({ attempt_id: attemptId, error: error.message, unclear: !refused }, refused ? 'stk push not accepted' : 'stk push unanswered');
      return 'failed';
    }
    // The prompt is on the phone: without its CheckoutRequestID reconciliation could never ask
    // how it ended, and the job's retry cannot help (the attempt is taken). Given up, the log
    // carries the CheckoutRequestID for a person to ask M-PESA.
    const named = await writePatiently(
      attemptId,
      'recording the CheckoutRequestID of an accepted stk push',
      () =>
        db
          .updateTable('payment_attempts')
          .set({ checkout_request_id: accepted.checkoutRequestId, merchant_request_id: accepted.merchantRequestId, updated_at: sql`now()` })
          .where('id', '=', attemptId)
          .returning('status')
          .executeTakeFirst(),
      { checkout_request_id: accepted.checkoutRequestId },
    );
    // Nothing expires an attempt whose push is in flight (reconciliation expires one without a
    // CheckoutRequestID only EXPIRE_AFTER_MS after its push started; a fast callback may have
    // settled it, which is fine): if something did, a person should look (a callback still applies).
    if (named === undefined || named.status === 'expired') logger.error({ attempt_id: attemptId }, 'stk prompt accepted for an attempt already expired');
    metrics.paymentAttempts.inc({ outcome: 'pushed' });
    return 'pushed';
  }

  /** How a second payment of a paid invoice reads on its attempt (also to the merchant, in the invoice's details). */
  const paidTwice = (receipt: string | null) => ({
    review_reason: `${PAID_TWICE}: receipt ${receipt ?? '-'}`,
    result_desc: `Paid twice: refund M-PESA ${receipt ?? '(receipt not known yet)'}`,
  });
  type LockedAttempt = Selectable<PaymentAttemptsTable>;
  /**
   * `source`: where the result was learnt. The STK query has been reported to say failed for
   * payments that went through, so a failure it reports is told to people with that caveat.
   */
  type ResultInput = { attempt: LockedAttempt; result: Omit<PaymentResult, 'checkoutRequestId'>; amountRequired: boolean; source: 'callback' | 'query' };
  type Applied = { status: 'applied' | 'duplicate' | 'review' | 'ignored'; plan: ResultPlan };

  /**
   * Applies results to locked attempts: the one code path for callbacks and queries, for one
   * result or many (a group of callbacks). A fixed number of statements whatever the count:
   * the invoices locked and read, receipts looked up, then one write per table. Returns one
   * outcome per input and the ids of the messages written.
   */
  async function applyResults(trx: Trx, inputs: readonly ResultInput[]): Promise<{ applied: Applied[]; outbound: Written }> {
    if (inputs.length === 0) return { applied: [], outbound: NOTHING_WRITTEN };
    // Locked after the attempts (always in that order, by id): the status read is the one the writes see.
    const facts = await invoiceFactsMany(trx, inputs.map((input) => input.attempt.invoice_id), { lock: true });
    const receipts = [...new Set(inputs.flatMap(({ result }) => (result.resultCode === 0 && result.receipt !== null ? [result.receipt] : [])))];
    const owners =
      receipts.length === 0
        ? []
        : await trx.selectFrom('payment_attempts').select(['id', 'mpesa_receipt']).where(anyOf('mpesa_receipt', receipts, 'text')).execute();
    const plans = planResults(
      inputs.map(({ attempt, result, amountRequired }) => ({
        attemptId: attempt.id,
        invoiceId: attempt.invoice_id,
        attempt: {
          status: attempt.status,
          paidTwice: attempt.review_reason?.startsWith(PAID_TWICE) ?? false,
          receipt: attempt.mpesa_receipt,
          amountDisputed: attempt.review_reason?.startsWith(AMOUNT_MISMATCH) ?? false,
        },
        askedAmount: Number(attempt.amount),
        result,
        amountRequired,
      })),
      new Map([...facts.values()].map((f) => [f.id, f.status])),
      new Map(owners.map((o) => [o.mpesa_receipt!, o.id])),
    );

    // Invoices this group marks paid: a review note for another of their attempts says so.
    const paying = new Set(inputs.filter((_, index) => plans[index]!.action === 'mark_paid').map(({ attempt }) => attempt.invoice_id));
    const attemptRows = new Map<string, { id: string; status: PaymentAttemptStatus; result_code: number; result_desc: string | null; mpesa_receipt: string | null; review_reason: string | null }>();
    const paidInvoices: Array<{ id: string; receipt: string | null }> = [];
    const receiptsForInvoices: Array<{ id: string; receipt: string | null }> = [];
    const events: Array<{ invoice_id: string; actor: string; type: string; data: Record<string, unknown> }> = [];
    const drafts: OutboundDraft[] = [];
    const applied = inputs.map(({ attempt, result, source }, index): Applied => {
      const plan = plans[index]!;
      const f = facts.get(attempt.invoice_id)!;
      const customerTexts = texts[f.customer_language ?? 'en'];
      const merchantTexts = texts[f.merchant_language ?? 'en'];
      const merchantName = f.business_name ?? '';
      const amount = Number(f.amount);
      const asked = Number(attempt.amount);
      const row = { id: attempt.id, result_code: result.resultCode, result_desc: result.resultDesc, mpesa_receipt: null, review_reason: null };
      switch (plan.action) {
        case 'ignore':
          return { status: plan.why === 'duplicate' || plan.why === 'receipt_taken' ? 'duplicate' : 'ignored', plan };
        case 'review':
          // The receipt goes in the review note, not the unique receipt column: it did not pay this invoice.
          attemptRows.set(attempt.id, { ...row, status: 'failed', review_reason: `${plan.reason}: paid ${result.amount ?? 'unknown'} receipt ${result.receipt ?? '-'}` });
          events.push({ invoice_id: f.id, actor: 'mpesa', type: 'payment_needs_review', data: { asked, paid: result.amount, receipt: result.receipt } });
          drafts.push({
            recipient: f.merchant_phone,
            kind: 'notice',
            invoiceId: f.id,
            // Paid by another attempt (before, or in this same group): the text must not say it is not.
            payload: { message: merchantTexts.paymentNeedsReview(f.number, asked, result.amount, { alreadyPaid: f.status === 'paid' || paying.has(f.id) }) },
          });
          return { status: 'review', plan };
        case 'review_receipt': {
          // A payment already recorded (from the STK query) stays as it is; its receipt is not
          // taken from a callback for another amount. The note is added to the attempt's
          // (a second payment's note keeps its lead, which marks it as reported).
          const note = `${plan.reason}: paid ${result.amount ?? 'unknown'} receipt ${result.receipt ?? '-'}`;
          // Its result stays the payment's (a second payment's "Paid twice: refund ..." too, which
          // the merchant reads in the invoice's details); only the note is added.
          attemptRows.set(attempt.id, {
            ...row,
            status: attempt.status,
            result_code: attempt.result_code ?? result.resultCode,
            result_desc: attempt.result_desc,
            review_reason: attempt.review_reason === null ? note : `${attempt.review_reason}; ${note}`,
          });
          events.push({ invoice_id: f.id, actor: 'mpesa', type: 'payment_needs_review', data: { asked, paid: result.amount, receipt: result.receipt } });
          drafts.push({
            recipient: f.merchant_phone,
            kind: 'notice',
            invoiceId: f.id,
            // The invoice is paid (by this attempt or another): the text must not say it is not.
            payload: { message: merchantTexts.paymentNeedsReview(f.number, asked, result.amount, { alreadyPaid: true }) },
          });
          return { status: 'review', plan };
        }
        case 'mark_failed': {
          attemptRows.set(attempt.id, { ...row, status: 'failed' });
          const unconfirmed = { fromQuery: source === 'query' };
          events.push({ invoice_id: f.id, actor: 'mpesa', type: 'payment_failed', data: { result_code: result.resultCode } });
          if (plan.notify) {
            drafts.push(
              {
                recipient: f.customer_phone,
                kind: 'notice',
                invoiceId: f.id,
                payload: {
                  message: customerTexts.paymentFailedToCustomer(merchantName, f.number, amount, unconfirmed, f.id),
                  sms: customerTexts.paymentFailedToCustomerSms(merchantName, f.number, amount, unconfirmed),
                },
              },
              { recipient: f.merchant_phone, kind: 'notice', invoiceId: f.id, payload: { message: merchantTexts.paymentFailedToMerchant(f.number, failureReason(result.resultCode), unconfirmed) } },
            );
          }
          return { status: 'applied', plan };
        }
        case 'paid_twice':
          // Paid already through another attempt: the customer paid twice. A person must refund,
          // and the receipt is kept on this attempt to find the money.
          attemptRows.set(attempt.id, { ...row, status: 'failed', mpesa_receipt: result.receipt, ...paidTwice(result.receipt) });
          events.push({ invoice_id: f.id, actor: 'mpesa', type: 'duplicate_payment', data: { receipt: result.receipt, attempt_id: attempt.id } });
          drafts.push({ recipient: f.merchant_phone, kind: 'notice', invoiceId: f.id, payload: { message: merchantTexts.paidTwiceToMerchant(f.number, result.amount ?? amount, result.receipt) } });
          return { status: 'review', plan };
        case 'add_receipt':
          if (attempt.status === 'succeeded') {
            attemptRows.set(attempt.id, { ...row, status: 'succeeded', result_code: 0, mpesa_receipt: result.receipt });
            receiptsForInvoices.push({ id: f.id, receipt: result.receipt });
          } else {
            attemptRows.set(attempt.id, { ...row, status: 'failed', result_code: 0, mpesa_receipt: result.receipt, ...paidTwice(result.receipt) });
          }
          events.push({ invoice_id: f.id, actor: 'mpesa', type: 'receipt_added', data: { receipt: result.receipt, attempt_id: attempt.id } });
          return { status: 'duplicate', plan };
        case 'mark_paid':
          attemptRows.set(attempt.id, { ...row, status: 'succeeded', result_code: 0, mpesa_receipt: result.receipt });
          paidInvoices.push({ id: f.id, receipt: result.receipt });
          // Cancelled while its prompt was on the phone, and paid: the money moved, so it is paid,
          // and the merchant is told it had been cancelled (a replacement invoice may be paid too).
          const wasCancelled = f.status === 'cancelled';
          events.push({
            invoice_id: f.id,
            actor: 'mpesa',
            type: 'paid',
            data: { receipt: result.receipt, attempt_id: attempt.id, ...(wasCancelled ? { was_cancelled: true } : {}) },
          });
          drafts.push(
            {
              recipient: f.customer_phone,
              kind: 'receipt',
              invoiceId: f.id,
              payload: {
                message: customerTexts.receiptToCustomer(merchantName, f.number, amount, result.receipt),
                sms: customerTexts.receiptToCustomerSms(merchantName, f.number, amount, result.receipt),
                template: { parameters: [templateName(merchantName), formatInvoiceNumber(f.number), formatAmount(amount), result.receipt ?? '-'] },
              },
            },
            {
              recipient: f.merchant_phone,
              kind: 'receipt',
              invoiceId: f.id,
              payload: { message: merchantTexts.paidToMerchant(f.number, amount, result.phone ?? attempt.phone, result.receipt, { wasCancelled }) },
            },
          );
          return { status: 'applied', plan };
      }
    });

    // An invoice paid earlier (the STK query) gets its receipt: a rare path, on its own, so that
    // no invoice is changed twice in the statement below.
    if (receiptsForInvoices.length > 0) {
      await sql`
        update invoices i set mpesa_receipt = r.receipt, updated_at = now()
        from ${rowsOf('r', receiptsForInvoices, { id: 'uuid', receipt: 'text' })}
        where i.id = r.id and i.mpesa_receipt is null`.execute(trx);
    }
    // The attempts, the invoices marked paid, the audit events and the messages (written
    // claimed: the caller delivers them once this commits, with no claim statement) in one
    // statement: fewer round trips while the group holds its locks. Each write changes its own
    // rows (one per attempt, one per invoice paid).
    const alongside: AlongsideWrite[] = [];
    if (attemptRows.size > 0) {
      alongside.push({
        name: 'attempts_written',
        write: sql`
          update payment_attempts a
          set status = r.status, result_code = r.result_code, result_desc = r.result_desc,
              mpesa_receipt = coalesce(r.mpesa_receipt, a.mpesa_receipt), review_reason = coalesce(r.review_reason, a.review_reason),
              completed_at = now(), updated_at = now()
          from ${rowsOf('r', [...attemptRows.values()], { id: 'uuid', status: 'text', result_code: 'integer', result_desc: 'text', mpesa_receipt: 'text', review_reason: 'text' })}
          where a.id = r.id`,
      });
    }
    if (paidInvoices.length > 0) {
      alongside.push({
        name: 'invoices_paid',
        counted: true,
        write: sql`
          update invoices i set status = 'paid', paid_at = ${now()}, mpesa_receipt = r.receipt, updated_at = now()
          from ${rowsOf('r', paidInvoices, { id: 'uuid', receipt: 'text' })}
          where i.id = r.id and i.status <> 'paid'
          returning i.id`,
      });
    }
    if (events.length > 0) {
      alongside.push({
        name: 'events_written',
        // In the order they were planned (their ids too).
        write: sql`
          insert into invoice_events (invoice_id, actor, type, data)
          select e.invoice_id, e.actor, e.type, e.data
          from ${rowsOf('e', events.map((event, ord) => ({ ...event, ord })), { invoice_id: 'uuid', actor: 'text', type: 'text', data: 'jsonb', ord: 'integer' })}
          order by e.ord`,
      });
    }
    const outbound = await deps.outbox.enqueueClaimed(trx, drafts, alongside);
    // The invoices are locked and the plan saw their status: anything else is a bug, and rolls back.
    if (paidInvoices.length > 0 && outbound.counts.invoices_paid !== paidInvoices.length) {
      throw new Error(`paid ${outbound.counts.invoices_paid} of ${paidInvoices.length} planned invoices`);
    }
    return { applied, outbound };
  }

  /** Counts results once they are committed (a group rolled back and re-applied counts once). */
  function countResults(applied: readonly Applied[]): void {
    for (const { plan } of applied) {
      if (plan.action === 'review' || plan.action === 'review_receipt' || plan.action === 'paid_twice') metrics.paymentAttempts.inc({ outcome: 'review' });
      else if (plan.action === 'mark_failed') metrics.paymentAttempts.inc({ outcome: 'failed' });
      else if (plan.action === 'mark_paid') metrics.paymentAttempts.inc({ outcome: 'succeeded' });
    }
  }

  type CallbackItem = { tokenHash: string; result: PaymentResult };

  /** One transaction for a group of callbacks (distinct tokens): lock, record, apply. */
  /** `appliedHere`, if given, is set true at the index of each callback this call recorded and applied (not a copy's duplicate). */
  async function applyCallbacks(items: readonly CallbackItem[], appliedHere?: boolean[]): Promise<CallbackOutcome[]> {
    const { outcomes, applied, outbound } = await db.transaction().execute(async (trx) => {
      // Only the hash is stored: looking the attempt up by it is the comparison.
      const attempts = await trx
        .selectFrom('payment_attempts')
        .selectAll()
        .where(anyOf('callback_token_hash', items.map((item) => item.tokenHash), 'text'))
        .orderBy('id')
        .forUpdate()
        .execute();
      const byHash = new Map(attempts.map((attempt) => [attempt.callback_token_hash, attempt]));
      const outcomes: CallbackOutcome[] = items.map(() => ({ status: 'duplicate' }));
      const accepted: Array<{ index: number; attempt: LockedAttempt; result: PaymentResult; key: string }> = [];
      items.forEach(({ tokenHash, result }, index) => {
        const attempt = byHash.get(tokenHash);
        if (attempt === undefined) outcomes[index] = { status: 'rejected', reason: 'unknown_token' };
        else if (attempt.checkout_request_id !== null && attempt.checkout_request_id !== result.checkoutRequestId) outcomes[index] = { status: 'rejected', reason: 'checkout_mismatch' };
        else accepted.push({ index, attempt, result, key: callbackKey(result) });
      });
      if (accepted.length === 0) return { outcomes, applied: [], outbound: NOTHING_WRITTEN };
      // The push's answer never reached us (timeout), but Safaricom's callback did.
      const unnamed = accepted.filter(({ attempt }) => attempt.checkout_request_id === null).map(({ attempt, result }) => ({ id: attempt.id, checkout: result.checkoutRequestId }));
      if (unnamed.length > 0) {
        await sql`
          update payment_attempts a set checkout_request_id = r.checkout
          from ${rowsOf('r', unnamed, { id: 'uuid', checkout: 'text' })}
          where a.id = r.id`.execute(trx);
      }
      // Recorded as processed. One kept for retry (or parked as dead) is taken over: its record
      // is this callback's, and it is applied now (its retry job then finds nothing to do).
      const { rows: recorded } = await sql<{ external_key: string }>`
        insert into inbound_events (source, external_key, payload, status, attempts, processed_at)
        select 'mpesa_callback', v.key, v.payload, 'processed', 1, now()
        from ${rowsOf('v', accepted.map(({ key, result }) => ({ key, payload: result })), { key: 'text', payload: 'jsonb' })}
        on conflict (source, external_key) do update
          set status = 'processed', payload = excluded.payload, attempts = inbound_events.attempts + 1, last_error = null, processed_at = now(), updated_at = now()
          where inbound_events.status in ('retrying', 'dead')
        returning external_key`.execute(trx);
      // The same callback again (already recorded): applied, or sent for review, once.
      const fresh = new Set(recorded.map((row) => row.external_key));
      const toApply = accepted.filter(({ key }) => fresh.delete(key));
      // A genuine success callback always carries the amount: one without it is not trusted.
      const { applied, outbound } = await applyResults(trx, toApply.map(({ attempt, result }) => ({ attempt, result, amountRequired: true, source: 'callback' as const })));
      toApply.forEach(({ index }, i) => {
        outcomes[index] = { status: applied[i]!.status };
        if (appliedHere !== undefined) appliedHere[index] = true;
      });
      return { outcomes, applied, outbound };
    });
    metrics.groupCommitSize.observe({ path: 'mpesa_callback' }, items.length);
    countResults(applied);
    deps.outbox.dispatchWritten(outbound);
    return outcomes;
  }

  /**
   * Group commit for callbacks: those arriving while a group is being written go together in
   * the next one. Callbacks with the same token never share a group (they run one after the
   * other). If a group fails it rolls back and each callback is applied alone, so one bad
   * callback costs the others only time.
   */
  const callbackBatcher = createBatcher<CallbackItem, CallbackOutcome | Error>({
    // Few large groups rather than many small ones: the statements of a group cost about the
    // same for 10 callbacks as for 200, and concurrent groups only queue behind each other on
    // two cores. bench/callbacks.ts at 256 clients, A/B in one hour: 8 groups of at most 64
    // (about 30 a group) cost 1.9-2.1 ms of CPU a callback (app and Postgres); 2 of at most
    // 256 (about 70 a group) 1.5-1.7 ms.
    maxBatch: 256,
    maxConcurrent: 2,
    // A group stuck on a lock (reconciliation holding an attempt, another machine) does not
    // hold up every other callback: after half a second one more group may start beside it.
    spareAfterMs: 500,
    key: (item) => item.tokenHash,
    async run(items) {
      try {
        return await applyCallbacks(items);
      } catch (error) {
        if (items.length === 1) return [await keepOrFail(items[0]!, error)];
        logger.warn({ size: items.length, error: error instanceof Error ? error.message.slice(0, 500) : String(error) }, 'callback group rolled back; applying its callbacks one by one');
        const out: Array<CallbackOutcome | Error> = [];
        for (const item of items) {
          try {
            out.push(...(await applyCallbacks([item])));
          } catch (alone) {
            out.push(await keepOrFail(item, alone));
          }
        }
        return out;
      }
    },
  });

  /**
   * A callback that could not be applied on its own is kept (its inbound event, status
   * retrying, with its retry job) and answered as accepted: Safaricom may never send it again,
   * and it carries what nothing else does (the M-PESA receipt number; the STK query has none).
   * If keeping it fails too, the error stands and the route answers 500.
   */
  async function keepOrFail(item: CallbackItem, error: unknown): Promise<CallbackOutcome | Error> {
    const lastError = error instanceof Error ? error.message.slice(0, 500) : String(error);
    const key = callbackKey(item.result);
    try {
      const kept = await db.transaction().execute(async (trx): Promise<CallbackOutcome> => {
        // Only a callback whose token names an attempt (and whose checkout is that attempt's)
        // is kept: a forged one is refused as it would be on a good day, whatever failed.
        const owner = await attemptNamedBy(trx, item.tokenHash);
        if (owner === undefined) return { status: 'rejected', reason: 'unknown_token' };
        if (owner.checkout_request_id !== null && owner.checkout_request_id !== item.result.checkoutRequestId) return { status: 'rejected', reason: 'checkout_mismatch' };
        // A record parked as dead (a fault that outlasted its tries) is revived by this copy.
        const row = await trx
          .insertInto('inbound_events')
          .values({ source: 'mpesa_callback', external_key: key, payload: jsonb({ tokenHash: item.tokenHash, result: item.result }), status: 'retrying', attempts: 1, last_error: lastError })
          .onConflict((oc) =>
            oc
              .columns(['source', 'external_key'])
              .doUpdateSet({ status: 'retrying', payload: (eb) => eb.ref('excluded.payload'), attempts: 1, last_error: lastError, updated_at: sql`now()` })
              .where('inbound_events.status', '=', 'dead'),
          )
          .returning('id')
          .executeTakeFirst();
        if (row !== undefined) {
          await scheduleRetry(retrying, trx, callbackRetryJob, row.id, 1);
          return { status: 'kept' };
        }
        // Recorded already: kept by another copy (its job will apply it), or applied meanwhile.
        const existing = await trx.selectFrom('inbound_events').select('status').where('source', '=', 'mpesa_callback').where('external_key', '=', key).executeTakeFirst();
        return existing?.status === 'retrying' ? { status: 'kept' } : { status: 'duplicate' };
      });
      if (kept.status === 'kept') {
        metrics.inboundEvents.inc({ source: 'mpesa_callback', outcome: 'retrying' });
        logger.warn({ error: lastError }, 'stk callback not applied; kept for its retry job');
      } else {
        logger.warn({ error: lastError, outcome: kept.status }, 'stk callback not applied, and not kept');
      }
      return kept;
    } catch (keeping) {
      logger.error({ error: lastError, keeping: keeping instanceof Error ? keeping.message.slice(0, 500) : String(keeping) }, 'stk callback neither applied nor kept');
      return error instanceof Error ? error : new Error(String(error));
    }
  }

  /**
   * A kept callback, applied again through the same path as a fresh one (the upsert there
   * takes its record over). Failing again, it waits longer; after MPESA_CALLBACK_MAX_ATTEMPTS tries
   * it is parked as dead for a person (an error log and a metric; a copy sent again by
   * Safaricom still applies, and setting it back to retrying makes the inbound sweep queue it).
   */
  async function retryCallback(eventId: string): Promise<'processed' | 'retrying' | 'dead' | 'not_pending'> {
    const event = await db.selectFrom('inbound_events').select(['status', 'payload']).where('id', '=', eventId).where('source', '=', 'mpesa_callback').executeTakeFirst();
    if (event === undefined || event.status !== 'retrying') return 'not_pending';
    const parsed = KeptCallback.safeParse(event.payload);
    // Unreadable, or its attempt gone or naming another checkout: no try will change that.
    if (!parsed.success) return failedTry(eventId, `unreadable kept callback: ${parsed.error.issues[0]?.message ?? 'invalid'}`, { parkNow: true });
    const appliedHere: boolean[] = [];
    let outcome: CallbackOutcome;
    try {
      [outcome] = (await applyCallbacks([{ tokenHash: parsed.data.tokenHash, result: parsed.data.result }], appliedHere)) as [CallbackOutcome];
    } catch (error) {
      return failedTry(eventId, error instanceof Error ? error.message.slice(0, 500) : String(error));
    }
    if (outcome.status === 'rejected') return failedTry(eventId, `rejected: ${outcome.reason}`, { parkNow: true });
    // A copy sent again took the record over (and applied it) since it was read: nothing done here.
    if (appliedHere[0] !== true) return 'not_pending';
    metrics.inboundEvents.inc({ source: 'mpesa_callback', outcome: 'processed' });
    return 'processed';
  }

  /** A failed try of a kept callback (src/inbound/retry.ts afterFailedTry). */
  function failedTry(eventId: string, error: string, options: { parkNow?: boolean } = {}) {
    return db.transaction().execute((trx) => afterFailedTry(retrying, trx, callbackRetryJob, eventId, error, options));
  }

  async function storeUnreadableCallback(token: string, raw: string, reason: string): Promise<'stored' | 'duplicate' | 'unknown_token'> {
    const owner = await attemptNamedBy(db, sha256Hex(token));
    if (owner === undefined) return 'unknown_token';
    // Keyed by the body: the same unreadable callback sent again is stored once.
    const row = await db
      .insertInto('inbound_events')
      .values({
        source: 'mpesa_callback',
        external_key: `unreadable:${sha256Hex(raw)}`,
        // The text as it came (cut at 100,000 UTF-16 units), and the attempt its token names.
        payload: jsonb({ attemptId: owner.id, raw: raw.slice(0, 100_000) }),
        status: 'rejected',
        last_error: reason.slice(0, 500),
      })
      .onConflict((oc) => oc.columns(['source', 'external_key']).doNothing())
      .returning('id')
      .executeTakeFirst();
    if (row === undefined) return 'duplicate';
    metrics.inboundEvents.inc({ source: 'mpesa_callback', outcome: 'rejected' });
    logger.error({ attempt_id: owner.id, event_id: row.id }, 'stk callback for a payment attempt did not read; stored as rejected for a person (it may carry an M-PESA receipt number)');
    return 'stored';
  }

  async function handleCallback(token: string, result: PaymentResult): Promise<CallbackOutcome> {
    const outcome = await callbackBatcher.submit({ tokenHash: sha256Hex(token), result });
    if (outcome instanceof Error) throw outcome;
    return outcome;
  }

  /**
   * Claims the next attempts to ask about: pending, with their prompt out (or, never pushed,
   * asked for) longer than `olderThanMs`, and not asked within their pause, least recently asked
   * first so that none waits behind others that keep going unanswered. The age counts from the
   * push (`since`): a push that waited for its job minutes after the attempt was asked for
   * would otherwise be queried seconds after its prompt went out, and the query's early
   * answers include failures that are not (the customer is still typing the PIN). Stamped as
   * asked at `at` in the same statement (skipping rows another run has locked), so a concurrent
   * run on another instance takes different ones, and this run never takes one twice.
   *
   * The pause after the n-th query is 1, 2, 4, 8, 16, then 30 minutes (none with `askAgainNow`):
   * a run every minute would otherwise ask Daraja about every unanswered attempt every minute
   * for a day. Each comes back with the stamp it had before (`previous`), for giveBackUnasked.
   */
  async function claimForQuery(at: Date, olderThanMs: number, askAgainNow: boolean) {
    const before = new Date(at.getTime() - olderThanMs);
    // On created_at as well: a push starts after its attempt is asked for, and the index of pending attempts is on created_at.
    const { rows } = await sql<{ id: string; checkout_request_id: string | null; since: Date; previous: Date | null }>`
      update payment_attempts a set last_queried_at = ${at}, query_count = a.query_count + 1
      from (
        select id, last_queried_at as previous from payment_attempts
        where status = 'pending' and created_at < ${before} and coalesce(push_started_at, created_at) < ${before}
          and (last_queried_at is null or ${
            askAgainNow
              ? sql`last_queried_at < ${at}`
              : // Capped before the power: 2^31 minutes as an int overflows (32 queries, about 14 hours into an outage).
                sql`last_queried_at <= ${at}::timestamptz - make_interval(mins => least(power(2, greatest(least(query_count, 6) - 1, 0)), 30)::int)`
          })
        order by coalesce(last_queried_at, push_started_at, created_at), id
        limit ${RECONCILE_PAGE}
        for update skip locked) picked
      where a.id = picked.id and a.status = 'pending'
      returning a.id, a.checkout_request_id, coalesce(a.push_started_at, a.created_at) as since, picked.previous`.execute(db);
    return rows;
  }

  /**
   * Attempts a run took (claimForQuery) but did not ask before its time was up: as they were,
   * so the next run asks them first and their backoff does not grow for a query never made.
   * Only while still pending and stamped by this run.
   */
  async function giveBackUnasked(attempts: ReadonlyArray<{ id: string; previous: Date | null }>, at: Date): Promise<void> {
    await sql`
      update payment_attempts a set last_queried_at = r.previous, query_count = greatest(a.query_count - 1, 0)
      from ${rowsOf('r', attempts, { id: 'uuid', previous: 'timestamptz' })}
      where a.id = r.id and a.status = 'pending' and a.last_queried_at = ${at}`.execute(db);
  }

  /** `since`: when its prompt went out (or, never pushed, when it was asked for): what its expiry counts from. */
  async function reconcileOne(attempt: { id: string; checkout_request_id: string | null; since: Date }, at: Date, totals: { queried: number; applied: number; expired: number }): Promise<void> {
    let answer: Awaited<ReturnType<DarajaClient['stkQuery']>> | undefined;
    if (attempt.checkout_request_id !== null) {
      try {
        answer = await deps.daraja.stkQuery(attempt.checkout_request_id);
        // 4999 has been reported as "still under processing": not an outcome.
        if (answer.state === 'completed' && answer.resultCode === 4999) answer = { state: 'pending' };
        totals.queried += 1;
        metrics.reconciliations.inc({ outcome: answer.state === 'pending' ? 'still_pending' : 'answered' });
      } catch (error) {
        metrics.reconciliations.inc({ outcome: 'error' });
        logger.warn({ attempt_id: attempt.id, error: error instanceof Error ? error.message : String(error) }, 'stk query failed');
      }
    }
    const unsettled: UnsettledQuery = attempt.checkout_request_id === null ? 'not_queryable' : answer === undefined ? 'unanswered' : 'still_processing';
    let results: Applied[] = [];
    const written = await db.transaction().execute(async (trx): Promise<Written> => {
      if (answer?.state === 'completed') {
        totals.applied += 1;
        const locked = await trx.selectFrom('payment_attempts').selectAll().where('id', '=', attempt.id).forUpdate().executeTakeFirstOrThrow();
        // The STK query carries no amount: the attempt's own amount stands.
        const result = { resultCode: answer.resultCode, resultDesc: answer.resultDesc, amount: null, receipt: null, phone: null };
        const done = await applyResults(trx, [{ attempt: locked, result, amountRequired: false, source: 'query' }]);
        results = done.applied;
        return done.outbound;
      }
      if (!expiresAfterQuery(at.getTime() - attempt.since.getTime(), unsettled)) return NOTHING_WRITTEN;
      const ended = await trx
        .updateTable('payment_attempts')
        .set({
          status: 'expired',
          result_desc: unsettled === 'unanswered' ? 'M-PESA never answered a query about it' : 'no answer from M-PESA',
          completed_at: sql`now()`,
          updated_at: sql`now()`,
        })
        .where('id', '=', attempt.id)
        .where('status', '=', 'pending')
        .returning('invoice_id')
        .executeTakeFirst();
      if (ended === undefined) return NOTHING_WRITTEN;
      totals.expired += 1;
      metrics.paymentAttempts.inc({ outcome: 'expired' });
      if (unsettled === 'unanswered') logger.error({ attempt_id: attempt.id }, 'gave up asking M-PESA about a payment attempt: no query was answered for a day; the merchant is told to check their M-PESA messages');
      const facts = await invoiceFacts(trx, ended.invoice_id);
      // Paid by another attempt, or cancelled: "not paid yet" would be false, or news to nobody.
      if (facts.status === 'paid' || facts.status === 'cancelled') return NOTHING_WRITTEN;
      return deps.outbox.enqueueClaimed(trx, [
        { recipient: facts.merchant_phone, kind: 'notice', invoiceId: facts.id, payload: { message: texts[facts.merchant_language ?? 'en'].paymentFailedToMerchant(facts.number, 'no_answer') } },
      ]);
    });
    countResults(results);
    deps.outbox.dispatchWritten(written);
  }

  async function reconcile(options: { olderThanMs?: number; askAgainNow?: boolean } = {}): Promise<{ queried: number; applied: number; expired: number }> {
    const at = now();
    const totals = { queried: 0, applied: 0, expired: 0 };
    const deadline = performance.now() + (deps.reconcileBudgetMs ?? RECONCILE_BUDGET_MS);
    // Page after page until none is due, a few queries at a time, and no new query once the
    // run's time is up (a page against a hanging Daraja would otherwise take 50 timeouts / 4):
    // the attempts of the page not asked are given back for the next run.
    while (performance.now() < deadline) {
      const due = await claimForQuery(at, options.olderThanMs ?? RECONCILE_AFTER_MS, options.askAgainNow ?? false);
      if (due.length === 0) break;
      let next = 0;
      await Promise.all(
        Array.from({ length: Math.min(QUERY_CONCURRENCY, due.length) }, async () => {
          while (next < due.length && performance.now() < deadline) {
            const attempt = due[next]!;
            next += 1;
            await reconcileOne(attempt, at, totals);
          }
        }),
      );
      if (next < due.length) {
        await giveBackUnasked(due.slice(next), at);
        break;
      }
    }
    // What is left pending past the usual end (counted from the push, as the expiry is) is
    // waiting on M-PESA to answer at all: the gauge an operator alerts on (an outage, or
    // credentials Daraja refuses).
    const usualEnd = new Date(at.getTime() - EXPIRE_AFTER_MS);
    const unsettled = await db
      .selectFrom('payment_attempts')
      .select(sql<string>`count(*)`.as('n'))
      .where('status', '=', 'pending')
      .where('created_at', '<', usualEnd)
      .where(sql<boolean>`coalesce(push_started_at, created_at) < ${usualEnd}`)
      .executeTakeFirstOrThrow();
    metrics.paymentsUnsettled.set(Number(unsettled.n));
    return totals;
  }

  async function sendReminders(): Promise<number> {
    const at = now();
    const today = nairobiToday(at);
    const tomorrow = dueDateFor(at, 1);
    let sent = 0;
    for (const [kind, day, when] of [
      ['due_tomorrow', tomorrow, 'tomorrow'],
      ['due_today', today, 'today'],
    ] as const) {
      const due = await db.selectFrom('invoices').select('id').where('status', 'in', ['pending', 'sent', 'failed']).where(sql<boolean>`due_date = ${day}::date`).execute();
      for (const { id } of due) {
        const ids = await db.transaction().execute(async (trx) => {
          // The list above may be stale: the invoice may have been paid or cancelled (or its due
          // date moved) since. Locked (as applyResults locks it to pay it), it is read as the
          // reminder will be committed with it.
          const still = await trx
            .selectFrom('invoices')
            .select('id')
            .where('id', '=', id)
            .where('status', 'in', ['pending', 'sent', 'failed'])
            .where(sql<boolean>`due_date = ${day}::date`)
            .forUpdate()
            .executeTakeFirst();
          if (still === undefined) return [];
          // The primary key makes each reminder once-only, whatever number of instances run this.
          const claimed = await trx.insertInto('invoice_reminders').values({ invoice_id: id, kind }).onConflict((oc) => oc.doNothing()).returning('invoice_id').executeTakeFirst();
          if (claimed === undefined) return [];
          const facts = await invoiceFacts(trx, id);
          const t = texts[facts.customer_language ?? 'en'];
          const name = facts.business_name ?? '';
          const amount = Number(facts.amount);
          const dueDate = nairobiMidnight(day);
          await trx.insertInto('invoice_events').values({ invoice_id: id, actor: 'system', type: `reminder_${kind}` }).execute();
          return notify(trx, [
            {
              recipient: facts.customer_phone,
              kind: 'reminder',
              invoiceId: id,
              payload: {
                message: t.reminderDue(name, facts.number, amount, dueDate, when, id),
                sms: t.reminderDueSms(name, facts.number, amount, dueDate, when),
                // Tagged with the invoice's id, as the message's own button: merchants share numbers.
                template: { parameters: [templateName(name), formatInvoiceNumber(facts.number), formatAmount(amount), day], buttonPayload: payButtonId(facts.number, id) },
              },
            },
          ]);
        });
        if (ids.length > 0) {
          sent += 1;
          metrics.reminders.inc({ kind });
        }
        deps.outbox.dispatchSoon(ids);
      }
    }
    return sent;
  }

  return {
    requestPayment,
    push,
    handleCallback,
    storeUnreadableCallback,
    reconcile,
    retryCallback,
    callbackRetryJob,
    sendReminders,
    jobs: [pushJob, reconcileJob, remindersJob, callbackRetryJob],
    beginStop: () => {
      stoppedAt ??= performance.now();
      stopping.abort();
    },
  };
}
