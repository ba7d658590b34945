/**
 * M-PESA payments: attempts, STK pushes, results (callbacks and queries through one code
 * path), reconciliation and reminders.
 *
 * Money rules (ARCHITECTURE.md): one attempt row per push, an unguessable per-attempt token
 * in the CallBackURL (only its hash is stored, and the token itself exists only in memory
 * and in the URL sent to Safaricom), a push is never sent twice for one attempt, a success
 * marks the invoice paid once, and nothing overwrites a recorded success.
 */
import { jsonb } from '../db/json.js';
import { randomBytes } from 'node:crypto';
import { sql, type Kysely, type Transaction } from 'kysely';
import { z } from 'zod';
import type { Config } from '../config.js';
import type { Database, PaymentInitiator } from '../db/schema.js';
import { sha256Hex } from '../security.js';
import type { OutboundDraft } from '../domain/outbound.js';
import { dueDateFor, nairobiMidnight, nairobiToday } from '../domain/invoice.js';
import { EXPIRE_AFTER_MS, RECONCILE_AFTER_MS, decidePaymentRequest, decideResult, failureReason, type PaymentRequestDecision } from '../domain/payment.js';
import { formatAmount, formatInvoiceNumber } from '../domain/parse.js';
import { texts } from '../domain/texts.js';
import type { Outbox } from '../delivery/outbox.js';
import type { JobDefinition, JobQueue } from '../jobs/queue.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { DarajaClient } from '../providers/mpesa/client.js';
import type { StkCallbackResult } from '../providers/mpesa/schemas.js';
import { ProviderError, isDeliveryError } from '../providers/errors.js';

type Trx = Transaction<Database>;


/** What a callback (or, without amount and receipt, a query) says about an attempt. */
export type PaymentResult = Pick<StkCallbackResult, 'checkoutRequestId' | 'resultCode' | 'resultDesc' | 'amount' | 'receipt' | 'phone'>;

export type CallbackOutcome =
  | { status: 'applied' | 'duplicate' | 'review' | 'ignored' }
  | { status: 'rejected'; reason: 'unknown_token' | 'checkout_mismatch' };

export type Payments = {
  /** Inside the caller's transaction: starts an attempt (and its push job) unless the rules say no. */
  requestPayment(trx: Trx, invoiceId: string, initiatedBy: PaymentInitiator): Promise<PaymentRequestDecision>;
  /** Sends the STK push of one attempt (the job's work). */
  push(attemptId: string): Promise<'pushed' | 'not_pending' | 'failed'>;
  /** A callback whose token (from the URL) and body were read: applies it, or says why not. */
  handleCallback(token: string, result: PaymentResult): Promise<CallbackOutcome>;
  /** Asks Daraja about attempts still pending; expires those with no answer. */
  /** Asks M-PESA about attempts still pending after `olderThanMs` (default: 3 minutes; the simulator's "ask now" passes 0). */
  reconcile(options?: { olderThanMs?: number }): Promise<{ queried: number; applied: number; expired: number }>;
  /** Queues the due-tomorrow and due-today reminders not sent yet. */
  sendReminders(): Promise<number>;
  readonly jobs: readonly JobDefinition[];
};

export type PaymentsDeps = {
  db: Kysely<Database>;
  jobs: Pick<JobQueue, 'enqueue'>;
  outbox: Pick<Outbox, 'enqueue' | 'dispatchSoon'>;
  daraja: DarajaClient;
  config: Pick<Config, 'mpesa'>;
  metrics: Metrics;
  logger: Logger;
  now?: () => Date;
};

const PushJobData = z.object({ attemptId: z.uuid() });
/** Daraja refusals after which a new push cannot double a prompt: spike arrest, quota, "already in process". */
const SAFE_TO_RETRY = new Set(['500.003.02', '500.003.03', '500.001.1001']);
const EmptyJobData = z.object({}).loose();


export function createPayments(deps: PaymentsDeps): Payments {
  const { db, metrics, logger } = deps;
  const now = deps.now ?? (() => new Date());

  const pushJob: JobDefinition<typeof PushJobData> = {
    name: 'stk-push',
    schema: PushJobData,
    retryLimit: 3,
    retryDelaySeconds: 20,
    async handle({ attemptId }) {
      await push(attemptId);
    },
  };
  const reconcileJob: JobDefinition<typeof EmptyJobData> = {
    name: 'payments-reconcile',
    schema: EmptyJobData,
    retryLimit: 0,
    async handle() {
      await reconcile();
    },
  };
  const remindersJob: JobDefinition<typeof EmptyJobData> = {
    name: 'invoice-reminders',
    schema: EmptyJobData,
    retryLimit: 2,
    async handle() {
      await sendReminders();
    },
  };

  /** The invoice, its merchant and its customer's language: what every message needs. */
  async function invoiceFacts(trx: Trx, invoiceId: string) {
    return trx
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
      .where('invoices.id', '=', invoiceId)
      .executeTakeFirstOrThrow();
  }

  async function requestPayment(trx: Trx, invoiceId: string, initiatedBy: PaymentInitiator): Promise<PaymentRequestDecision> {
    const invoice = await trx.selectFrom('invoices').select(['id', 'status', 'amount', 'customer_phone']).where('id', '=', invoiceId).forUpdate().executeTakeFirstOrThrow();
    const latest = await trx
      .selectFrom('payment_attempts')
      .select(['status', 'created_at'])
      .where('invoice_id', '=', invoiceId)
      .orderBy('created_at', 'desc')
      .limit(1)
      .executeTakeFirst();
    const decision = decidePaymentRequest(invoice.status, latest === undefined ? undefined : { status: latest.status, createdAt: latest.created_at }, now());
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

  async function push(attemptId: string): Promise<'pushed' | 'not_pending' | 'failed'> {
    const token = randomBytes(32).toString('base64url');
    const claimed = await db
      .updateTable('payment_attempts')
      .set({ push_started_at: sql`now()`, callback_token_hash: sha256Hex(token), updated_at: sql`now()` })
      .where('id', '=', attemptId)
      .where('status', '=', 'pending')
      .where('push_started_at', 'is', null)
      // Never prompt for an invoice paid or cancelled while this push waited (e.g. a job retry).
      .where('invoice_id', 'in', (eb) => eb.selectFrom('invoices').select('id').where('status', 'not in', ['paid', 'cancelled']))
      .returning(['id', 'invoice_id', 'amount', 'phone', 'initiated_by'])
      .executeTakeFirst();
    if (claimed === undefined) {
      await db
        .updateTable('payment_attempts')
        .set({ status: 'expired', result_desc: 'invoice paid or cancelled before the prompt', completed_at: sql`now()`, updated_at: sql`now()` })
        .where('id', '=', attemptId)
        .where('status', '=', 'pending')
        .where('push_started_at', 'is', null)
        .execute();
      return 'not_pending';
    }
    const invoice = await db.selectFrom('invoices').select(['number']).where('id', '=', claimed.invoice_id).executeTakeFirstOrThrow();
    const reference = formatInvoiceNumber(invoice.number);
    const callbackBase = deps.config.mpesa.callbackUrl?.replace(/\/+$/, '') ?? '';
    try {
      const accepted = await deps.daraja.stkPush({
        amount: Number(claimed.amount),
        phone: claimed.phone,
        accountReference: reference,
        description: reference,
        callbackUrl: `${callbackBase}/${token}`,
      });
      await db
        .updateTable('payment_attempts')
        .set({ checkout_request_id: accepted.checkoutRequestId, merchant_request_id: accepted.merchantRequestId, updated_at: sql`now()` })
        .where('id', '=', attemptId)
        .execute();
      metrics.paymentAttempts.inc({ outcome: 'pushed' });
      return 'pushed';
    } catch (error) {
      if (!isDeliveryError(error)) throw error;
      // Only Daraja's own "not now" codes prove nothing reached the phone; a bare 5xx from a
      // gateway is as unclear as a timeout, so it keeps this attempt's token and ends here.
      const refusedForNow = error instanceof ProviderError && error.code !== undefined && SAFE_TO_RETRY.has(error.code);
      if (refusedForNow) {
        // Safaricom said no (busy, spike arrest): nothing reached the phone, so a later try is safe.
        await db.updateTable('payment_attempts').set({ push_started_at: null }).where('id', '=', attemptId).execute();
        metrics.paymentAttempts.inc({ outcome: 'push_retry' });
        throw error;
      }
      // Final refusal, or no answer (the prompt may or may not have reached the phone: a
      // callback with this attempt's token is still honoured; reconciliation cannot ask
      // without a CheckoutRequestID, so the attempt ends here).
      const ids = await db.transaction().execute(async (trx) => {
        const ended = await trx
          .updateTable('payment_attempts')
          .set({ status: 'failed', result_desc: `push not accepted: ${error.message}`.slice(0, 300), completed_at: sql`now()`, updated_at: sql`now()` })
          .where('id', '=', attemptId)
          .where('status', '=', 'pending')
          .returning('id')
          .executeTakeFirst();
        // A callback may have settled the attempt meanwhile: then there is nothing to say.
        if (ended === undefined || claimed.initiated_by !== 'customer') return [];
        const facts = await invoiceFacts(trx, claimed.invoice_id);
        const t = texts[facts.customer_language ?? 'en'];
        return notify(trx, [{ recipient: facts.customer_phone, kind: 'notice', invoiceId: facts.id, payload: { message: t.promptNotStarted(facts.number) } }]);
      });
      deps.outbox.dispatchSoon(ids);
      metrics.paymentAttempts.inc({ outcome: 'push_failed' });
      logger.warn({ attempt_id: attemptId, error: error.message }, 'stk push not accepted');
      return 'failed';
    }
  }

  /** Applies a result to a locked attempt: the one code path for callbacks and queries. */
  async function applyResult(
    trx: Trx,
    attemptId: string,
    result: Omit<PaymentResult, 'checkoutRequestId'>,
    options: { amountRequired: boolean },
  ): Promise<{ status: 'applied' | 'duplicate' | 'review' | 'ignored'; messageIds: string[] }> {
    const attempt = await trx.selectFrom('payment_attempts').selectAll().where('id', '=', attemptId).forUpdate().executeTakeFirstOrThrow();
    const decision = decideResult(attempt.status, result, Number(attempt.amount), options);
    const facts = await invoiceFacts(trx, attempt.invoice_id);
    const customerTexts = texts[facts.customer_language ?? 'en'];
    const merchantTexts = texts[facts.merchant_language ?? 'en'];
    const merchantName = facts.business_name ?? '';
    const amount = Number(facts.amount);
    switch (decision.action) {
      case 'ignore':
        return { status: decision.why === 'duplicate' ? 'duplicate' : 'ignored', messageIds: [] };
      case 'review': {
        await trx
          .updateTable('payment_attempts')
          .set({
            status: 'failed',
            result_code: result.resultCode,
            result_desc: result.resultDesc,
            // The receipt goes in the review note, not the unique receipt column: it did not pay this invoice.
            review_reason: `${decision.reason}: paid ${result.amount ?? 'unknown'} receipt ${result.receipt ?? '-'}`,
            completed_at: sql`now()`,
            updated_at: sql`now()`,
          })
          .where('id', '=', attemptId)
          .execute();
        await trx.insertInto('invoice_events').values({ invoice_id: facts.id, actor: 'mpesa', type: 'payment_needs_review', data: JSON.stringify({ asked: Number(attempt.amount), paid: result.amount, receipt: result.receipt }) }).execute();
        metrics.paymentAttempts.inc({ outcome: 'review' });
        const ids = await notify(trx, [
          { recipient: facts.merchant_phone, kind: 'notice', invoiceId: facts.id, payload: { message: merchantTexts.paymentNeedsReview(facts.number, Number(attempt.amount), result.amount ?? 0) } },
        ]);
        return { status: 'review', messageIds: ids };
      }
      case 'mark_failed': {
        await trx
          .updateTable('payment_attempts')
          .set({ status: 'failed', result_code: result.resultCode, result_desc: result.resultDesc, completed_at: sql`now()`, updated_at: sql`now()` })
          .where('id', '=', attemptId)
          .execute();
        await trx.insertInto('invoice_events').values({ invoice_id: facts.id, actor: 'mpesa', type: 'payment_failed', data: JSON.stringify({ result_code: result.resultCode }) }).execute();
        metrics.paymentAttempts.inc({ outcome: 'failed' });
        if (facts.status === 'paid' || facts.status === 'cancelled') return { status: 'applied', messageIds: [] };
        const ids = await notify(trx, [
          {
            recipient: facts.customer_phone,
            kind: 'notice',
            invoiceId: facts.id,
            payload: {
              message: customerTexts.paymentFailedToCustomer(merchantName, facts.number, amount),
              sms: customerTexts.paymentFailedToCustomerSms(merchantName, facts.number, amount),
            },
          },
          { recipient: facts.merchant_phone, kind: 'notice', invoiceId: facts.id, payload: { message: merchantTexts.paymentFailedToMerchant(facts.number, failureReason(result.resultCode)) } },
        ]);
        return { status: 'applied', messageIds: ids };
      }
      case 'mark_paid': {
        const receiptTaken =
          result.receipt !== null &&
          (await trx.selectFrom('payment_attempts').select('id').where('mpesa_receipt', '=', result.receipt).where('id', '<>', attemptId).executeTakeFirst()) !== undefined;
        if (receiptTaken) return { status: 'duplicate', messageIds: [] };
        await trx
          .updateTable('payment_attempts')
          .set({ status: 'succeeded', result_code: 0, result_desc: result.resultDesc, mpesa_receipt: result.receipt, completed_at: sql`now()`, updated_at: sql`now()` })
          .where('id', '=', attemptId)
          .execute();
        const paid = await trx
          .updateTable('invoices')
          .set({ status: 'paid', paid_at: now(), mpesa_receipt: result.receipt, updated_at: sql`now()` })
          .where('id', '=', facts.id)
          .where('status', '<>', 'paid')
          .returning('id')
          .executeTakeFirst();
        metrics.paymentAttempts.inc({ outcome: 'succeeded' });
        if (paid === undefined) {
          // Paid already through another attempt: the customer paid twice. A person must refund.
          await trx.insertInto('invoice_events').values({ invoice_id: facts.id, actor: 'mpesa', type: 'duplicate_payment', data: JSON.stringify({ receipt: result.receipt }) }).execute();
          const ids = await notify(trx, [
            { recipient: facts.merchant_phone, kind: 'notice', invoiceId: facts.id, payload: { message: merchantTexts.paymentNeedsReview(facts.number, amount, result.amount ?? amount) } },
          ]);
          return { status: 'review', messageIds: ids };
        }
        await trx.insertInto('invoice_events').values({ invoice_id: facts.id, actor: 'mpesa', type: 'paid', data: JSON.stringify({ receipt: result.receipt, attempt_id: attemptId }) }).execute();
        const ids = await notify(trx, [
          {
            recipient: facts.customer_phone,
            kind: 'receipt',
            invoiceId: facts.id,
            payload: {
              message: customerTexts.receiptToCustomer(merchantName, facts.number, amount, result.receipt),
              sms: customerTexts.receiptToCustomerSms(merchantName, facts.number, amount, result.receipt),
              template: { parameters: [merchantName.slice(0, 60) || 'InvoiceIQ', formatInvoiceNumber(facts.number), formatAmount(amount), result.receipt ?? '-'] },
            },
          },
          {
            recipient: facts.merchant_phone,
            kind: 'receipt',
            invoiceId: facts.id,
            payload: { message: merchantTexts.paidToMerchant(facts.number, amount, result.phone ?? attempt.phone, result.receipt) },
          },
        ]);
        return { status: 'applied', messageIds: ids };
      }
    }
  }

  async function handleCallback(token: string, result: PaymentResult): Promise<CallbackOutcome> {
    // Only the hash is stored: looking the attempt up by it is the comparison.
    const tokenHash = sha256Hex(token);
    const outcome = await db.transaction().execute(async (trx) => {
      const attempt = await trx
        .selectFrom('payment_attempts')
        .select(['id', 'checkout_request_id'])
        .where('callback_token_hash', '=', tokenHash)
        .forUpdate()
        .executeTakeFirst();
      if (attempt === undefined) return { status: 'rejected' as const, reason: 'unknown_token' as const, messageIds: [] };
      if (attempt.checkout_request_id !== null && attempt.checkout_request_id !== result.checkoutRequestId) {
        return { status: 'rejected' as const, reason: 'checkout_mismatch' as const, messageIds: [] };
      }
      if (attempt.checkout_request_id === null) {
        // The push's answer never reached us (timeout), but Safaricom's callback did.
        await trx.updateTable('payment_attempts').set({ checkout_request_id: result.checkoutRequestId }).where('id', '=', attempt.id).execute();
      }
      const recorded = await trx
        .insertInto('inbound_events')
        .values({ source: 'mpesa_callback', external_key: `${result.checkoutRequestId}:${result.resultCode}:${result.receipt ?? ''}:${result.amount ?? ''}`, payload: jsonb(result), status: 'processed', attempts: 1, processed_at: sql`now()` })
        .onConflict((oc) => oc.columns(['source', 'external_key']).doNothing())
        .returning('id')
        .executeTakeFirst();
      // The same callback again: already applied (or already sent for review) once.
      if (recorded === undefined) return { status: 'duplicate' as const, messageIds: [] };
      // A genuine success callback always carries the amount: one without it is not trusted.
      return applyResult(trx, attempt.id, result, { amountRequired: true });
    });
    deps.outbox.dispatchSoon(outcome.messageIds);
    if (outcome.status === 'rejected') return { status: 'rejected', reason: outcome.reason };
    return { status: outcome.status };
  }

  async function reconcile(options: { olderThanMs?: number } = {}): Promise<{ queried: number; applied: number; expired: number }> {
    const at = now();
    let queried = 0;
    let applied = 0;
    let expired = 0;
    const due = await db
      .selectFrom('payment_attempts')
      .select(['id', 'checkout_request_id', 'created_at', 'push_started_at'])
      .where('status', '=', 'pending')
      .where('created_at', '<', new Date(at.getTime() - (options.olderThanMs ?? RECONCILE_AFTER_MS)))
      .orderBy('created_at')
      .limit(50)
      .execute();
    for (const attempt of due) {
      const tooOld = at.getTime() - attempt.created_at.getTime() > EXPIRE_AFTER_MS;
      let answer: Awaited<ReturnType<DarajaClient['stkQuery']>> = { state: 'pending' };
      if (attempt.checkout_request_id !== null) {
        try {
          answer = await deps.daraja.stkQuery(attempt.checkout_request_id);
          // 4999 has been reported as "still under processing": not an outcome.
          if (answer.state === 'completed' && answer.resultCode === 4999) answer = { state: 'pending' };
          queried += 1;
          metrics.reconciliations.inc({ outcome: answer.state === 'pending' ? 'still_pending' : 'answered' });
        } catch (error) {
          metrics.reconciliations.inc({ outcome: 'error' });
          logger.warn({ attempt_id: attempt.id, error: error instanceof Error ? error.message : String(error) }, 'stk query failed');
        }
      }
      const ids = await db.transaction().execute(async (trx) => {
        if (answer.state === 'completed') {
          applied += 1;
          // The STK query carries no amount: the attempt's own amount stands.
          return (await applyResult(trx, attempt.id, { resultCode: answer.resultCode, resultDesc: answer.resultDesc, amount: null, receipt: null, phone: null }, { amountRequired: false })).messageIds;
        }
        await trx.updateTable('payment_attempts').set({ last_queried_at: at, query_count: sql`query_count + 1` }).where('id', '=', attempt.id).execute();
        if (!tooOld) return [];
        const ended = await trx
          .updateTable('payment_attempts')
          .set({ status: 'expired', result_desc: 'no answer from M-PESA', completed_at: sql`now()`, updated_at: sql`now()` })
          .where('id', '=', attempt.id)
          .where('status', '=', 'pending')
          .returning('invoice_id')
          .executeTakeFirst();
        if (ended === undefined) return [];
        expired += 1;
        metrics.paymentAttempts.inc({ outcome: 'expired' });
        const facts = await invoiceFacts(trx, ended.invoice_id);
        return notify(trx, [
          { recipient: facts.merchant_phone, kind: 'notice', invoiceId: facts.id, payload: { message: texts[facts.merchant_language ?? 'en'].paymentFailedToMerchant(facts.number, 'no_answer') } },
        ]);
      });
      deps.outbox.dispatchSoon(ids);
    }
    return { queried, applied, expired };
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
                message: t.reminderDue(name, facts.number, amount, dueDate, when),
                sms: t.reminderDueSms(name, facts.number, amount, dueDate, when),
                template: { parameters: [name.slice(0, 60) || 'InvoiceIQ', formatInvoiceNumber(facts.number), formatAmount(amount), day], buttonPayload: `pay:${formatInvoiceNumber(facts.number)}` },
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

  return { requestPayment, push, handleCallback, reconcile, sendReminders, jobs: [pushJob, reconcileJob, remindersJob] };
}
