/**
 * Inbound WhatsApp events, exactly once. Each message (under its wamid) and each status
 * (under wamid:status) is inserted into inbound_events in the same transaction as its
 * effects; a duplicate insert means "already done" and stops there. An event whose
 * processing fails is stored for a retry job (with backoff) and, after a bounded number
 * of tries, parked as dead and counted: never lost, never retried forever.
 *
 * Meta posts the webhooks of every number subscribed to the app to one URL: a change naming
 * another phone_number_id than ours (WABA_PHONE_ID) is skipped and counted (other_number). A
 * status about a wamid we never stored is kept only while a WhatsApp send of ours is in flight
 * (it may be that send's); otherwise it is recorded as unknown_message, not parked as dead.
 */
import { jsonb, rowsOf } from '../db/json.js';
import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely';
import { z } from 'zod';
import type { ConversationHandler, ConversationInput, ConversationMessage, SenderFacts } from '../conversation/port.js';
import type { OutboundDraft } from '../domain/outbound.js';
import { createBatcher } from '../batch.js';
import type { Database, InboundSource } from '../db/schema.js';
import { sha256Hex } from '../security.js';
import { combineStatus } from '../domain/delivery.js';
import { messageReportedOn } from './match.js';
import { afterFailedTry, retryJob as inboundRetryJob, scheduleRetry, type RetryDeps, type RetryJob } from './retry.js';
import type { Outbox } from '../delivery/outbox.js';
import { scheduledJob, type JobDefinition, type JobQueue, type NoJobData } from '../jobs/queue.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { InboundMessage, MessageStatus, type WebhookPayload } from '../providers/whatsapp/schemas.js';
import { DeliveryReport, ReportNotYetMatchedError, UnknownReportError, applyDeliveryReport, reportKey } from './sms-report.js';
import { IncomingSms, smsConversationMessage } from './sms-message.js';

/** What one inbound_events row holds for a WhatsApp message. */
const StoredMessage = z.object({ message: InboundMessage, profileName: z.string().optional() });
const StoredStatus = z.object({ status: MessageStatus });

/** A status for a message we have not recorded as sent yet (the send's answer is still in flight). */
class UnknownMessageError extends Error {}
/**
 * A status for a wamid no message of ours has, while no WhatsApp send of ours is in flight: a
 * send that timed out although Meta accepted it (its retry has another wamid), a message sent
 * from WhatsApp Manager. Recorded as processed (unknown_message), never retried.
 */
class NotOurMessageError extends Error {}
const NOT_OURS = 'unknown wamid: no message of ours has it and no WhatsApp send is in flight';
const NOT_OURS_SMS = 'unknown SMS id: no message of ours has it and no SMS send is in flight';

/** A webhook item that did not match its schema: where it was in its payload, itself, and why. */
export type RejectedItemRecord = { readonly at: string; readonly list: string; readonly item: unknown; readonly reason: string };

export type InboundResult = { processed: number; duplicates: number; retrying: number; outboundIds: string[] };

export type WhatsAppInbound = {
  /** Commits every event of a payload; the caller dispatches `outboundIds` after answering. */
  handlePayload(payload: WebhookPayload): Promise<InboundResult>;
  /** Stores a signed payload that did not parse: rejected, answered 200, counted. */
  storeRejected(rawBody: Uint8Array, parsed: unknown, reason: string): Promise<void>;
  /**
   * Stores the items of a signed payload that did not parse (its other items are applied):
   * each rejected once (keyed by its content), counted.
   */
  storeRejectedItems(items: readonly RejectedItemRecord[]): Promise<void>;
  /**
   * Applies an SMS delivery report once; one that may be about an SMS whose success is not
   * recorded yet is kept and retried. Throws UnknownReportError for one about nothing of ours.
   */
  handleDeliveryReport(report: DeliveryReport): Promise<'processed' | 'duplicate' | 'retrying'>;
  /** Applies a text message sent to the SMS number once (src/inbound/sms-message.ts); the replies are dispatched. */
  handleIncomingSms(sms: IncomingSms): Promise<'processed' | 'duplicate' | 'retrying'>;
  /** Runs a stored event again (the retry job). */
  retryEvent(eventId: string): Promise<'processed' | 'retrying' | 'dead' | 'not_pending'>;
  readonly retryJob: RetryJob;
  /** Queues again what has waited for a retry for STUCK_RETRY_MINUTES (its retry job gone). */
  sweepRetries(): Promise<number>;
  readonly retrySweepJob: JobDefinition<NoJobData>;
};

/** Far beyond a retry's own backoff (at most 10 minutes) and its job's retries (about 85 minutes). */
export const STUCK_RETRY_MINUTES = 120;

export type InboundDeps = {
  db: Kysely<Database>;
  jobs: Pick<JobQueue, 'enqueue'>;
  outbox: Outbox;
  conversation: ConversationHandler;
  metrics: Metrics;
  logger: Logger;
  maxAttempts: number;
  random?: () => number;
  /**
   * Retry jobs of inbound events applied elsewhere (kept M-PESA callbacks: the payments
   * service's), by source: the sweep queues an event's own. Their data is { eventId }.
   */
  retryJobs?: Partial<Record<InboundSource, RetryJob>>;
  /** Group commit of concurrent messages (defaults: 64 per batch, 2 batches at once). */
  batch?: { maxBatch?: number; maxConcurrent?: number };
  /**
   * Our number's phone_number_id (WABA_PHONE_ID). Every number subscribed to the same Meta app
   * posts to this webhook: a change whose metadata names another one is skipped. Undefined
   * (development, the simulator): no change is skipped.
   */
  phoneId?: string | undefined;
};

type MessageItem = { key: string; stored: z.infer<typeof StoredMessage> };
type ItemOutcome = { kind: 'processed' | 'duplicate' | 'retrying'; ids: string[] };

function conversationMessage(stored: z.infer<typeof StoredMessage>): ConversationMessage {
  const { message } = stored;
  return {
    phone: message.from,
    messageId: message.id,
    receivedAt: new Date(Number(message.timestamp) * 1000),
    profileName: stored.profileName,
    input: toInput(message),
  };
}

function toInput(message: InboundMessage): ConversationInput {
  if (message.type === 'text' && 'text' in message) return { kind: 'text', text: (message.text as { body: string }).body };
  if (message.type === 'interactive' && 'interactive' in message) {
    const interactive = message.interactive as Record<string, unknown>;
    const reply = (interactive.button_reply ?? interactive.list_reply) as { id?: unknown; title?: unknown } | undefined;
    if (reply !== undefined && typeof reply.id === 'string') {
      return { kind: interactive.type === 'list_reply' ? 'list' : 'button', id: reply.id, title: typeof reply.title === 'string' ? reply.title : '' };
    }
  }
  if (message.type === 'button' && 'button' in message) {
    const button = message.button as { payload?: string; text?: string };
    if (button.payload !== undefined) return { kind: 'button', id: button.payload, title: button.text ?? '' };
    if (button.text !== undefined) return { kind: 'text', text: button.text };
  }
  return { kind: 'other', type: message.type };
}

export function createWhatsAppInbound(deps: InboundDeps): WhatsAppInbound {
  const { db, metrics, logger } = deps;
  const retrying: RetryDeps = { jobs: deps.jobs, metrics, logger, maxAttempts: deps.maxAttempts, random: deps.random ?? Math.random };
  const retryJob = inboundRetryJob('retry-inbound-event', (eventId) => retryEvent(eventId));
  /** Sources whose kept events another service retries (deps.retryJobs): never this job's. */
  const retriedElsewhere = Object.keys(deps.retryJobs ?? {}) as InboundSource[];

  /**
   * Upserts and locks the sender's conversation row (messages from one number apply one at
   * a time) and moves the 24-hour window forward: to when the message was sent, never later
   * than now (a timestamp ahead of our clock would keep a window open that Meta has closed,
   * and every free-form message in that time would be refused, 131047, before its template).
   * `sentAt` null (an SMS): the row is locked, the window left where it is (an SMS opens none).
   * With `eventValues`, the inbound event is inserted in the same statement: no row back means
   * the event was a duplicate.
   */
  async function touchConversation(
    trx: Transaction<Database>,
    phone: string,
    sentAt: Date | null,
    eventValues?: { source: InboundSource; key: string; payload: unknown },
  ): Promise<boolean> {
    // greatest() ignores a null: an existing window stays.
    const opens = sentAt === null ? sql`null::timestamptz` : sql`least(${sentAt}::timestamptz, now())`;
    const upsert = (from: string) => sql`
      insert into conversations (phone, state, last_inbound_at)
      select ${phone}, ${JSON.stringify({ version: 0 })}::jsonb, ${opens} ${sql.raw(from)}
      on conflict (phone) do update
        set last_inbound_at = greatest(conversations.last_inbound_at, excluded.last_inbound_at), updated_at = now()
      returning phone`;
    if (eventValues === undefined) {
      await upsert('').execute(trx);
      return true;
    }
    const result = await sql`
      with event as (
        insert into inbound_events (source, external_key, payload, status, attempts, processed_at)
        values (${eventValues.source}, ${eventValues.key}, ${jsonb(eventValues.payload)}::jsonb, 'processed', 1, now())
        on conflict (source, external_key) do nothing
        returning id
      )
      ${upsert('from event')}`.execute(trx);
    return result.rows.length > 0;
  }

  /** The effects of one message: contact window, conversation, replies. Returns outbox ids, or null for a duplicate. */
  async function applyMessage(
    trx: Transaction<Database>,
    stored: z.infer<typeof StoredMessage>,
    eventValues?: { source: InboundSource; key: string; payload: unknown },
  ): Promise<string[] | null> {
    const input = conversationMessage(stored);
    if (!(await touchConversation(trx, input.phone, input.receivedAt, eventValues))) return null;
    const drafts = await deps.conversation(trx, input);
    return deps.outbox.enqueue(trx, drafts);
  }

  /** The effects of one status report on its outbox row. Returns outbox ids to dispatch. */
  async function applyStatus(trx: Transaction<Database>, stored: z.infer<typeof StoredStatus>): Promise<string[]> {
    const { status } = stored;
    if (status.status === 'deleted' || status.status === 'warning') return [];
    // While a WhatsApp send is in flight (channel not yet sms) an unknown wamid may be its.
    const row = await messageReportedOn(
      () => trx.selectFrom('outbound_messages').select(['id', 'status', 'channel', 'fell_back_at']).where('provider_message_id', '=', status.id).forUpdate().executeTakeFirst(),
      async () =>
        (await trx
          .selectFrom('outbound_messages')
          .select('id')
          .where('status', '=', 'sending')
          .where((eb) => eb.or([eb('channel', 'is', null), eb('channel', '=', 'whatsapp')]))
          .limit(1)
          .executeTakeFirst()) !== undefined,
      { notYet: () => new UnknownMessageError('no outbound message with this wamid yet (a WhatsApp send is in flight)'), notOurs: () => new NotOurMessageError(NOT_OURS) },
    );
    if (row.channel === 'sms') return []; // Already went by SMS: WhatsApp's reports no longer decide.
    let next = combineStatus(row.status, status.status);
    if (next === 'failed') {
      // A delivered or read report that came before our send was recorded is kept for a retry,
      // not yet applied: it still proves the delivery, so this failure sends no SMS.
      const delivery = await trx
        .selectFrom('inbound_events')
        .select('external_key')
        .where('source', '=', 'whatsapp_status')
        .where('external_key', 'in', [`${status.id}:read`, `${status.id}:delivered`])
        .execute();
      if (delivery.length > 0) next = combineStatus(row.status, delivery.some((e) => e.external_key.endsWith(':read')) ? 'read' : 'delivered');
    }
    if (next === null) return [];
    const code = status.errors?.[0]?.code;
    // Whatever the code (outside the window, not on WhatsApp, spam limits, a template problem,
    // a rate limit Meta gave up on), WhatsApp did not deliver it: the person still gets it by SMS.
    if (next === 'failed' && row.fell_back_at === null) return deps.outbox.fallBackToSms(trx, row.id, `status_failed_${code ?? 'unknown'}`);
    await trx
      .updateTable('outbound_messages')
      .set({ status: next, updated_at: sql`now()`, ...(next === 'failed' ? { last_error: `whatsapp status failed ${code ?? ''}`.trim() } : {}) })
      .where('id', '=', row.id)
      .execute();
    return [];
  }

  async function apply(trx: Transaction<Database>, source: InboundSource, payload: unknown): Promise<string[]> {
    switch (source) {
      case 'whatsapp_message':
        return (await applyMessage(trx, StoredMessage.parse(payload))) ?? [];
      case 'whatsapp_status':
        return applyStatus(trx, StoredStatus.parse(payload));
      case 'sms_report':
        // The notice to the merchant when the report leaves an invoice unreached.
        return applyDeliveryReport(trx, DeliveryReport.parse(payload), deps.outbox);
      case 'sms_message': {
        // A sender that is not a Kenyan mobile number is answered nothing.
        const input = smsConversationMessage(IncomingSms.parse(payload), new Date());
        if (input === null) return [];
        await touchConversation(trx, input.phone, null);
        return deps.outbox.enqueue(trx, await deps.conversation(trx, input));
      }
      case 'whatsapp_payload':
      case 'mpesa_callback':
        throw new Error(`inbound events from ${source} are not applied here`);
    }
  }

  /** First delivery of one event. */
  async function processEvent(source: InboundSource, key: string, payload: unknown, outboundIds: string[]): Promise<'processed' | 'duplicate' | 'retrying'> {
    try {
      const outcome = await db.transaction().execute(async (trx) => {
        if (source === 'whatsapp_message') {
          // Event insert and conversation lock in one statement (the hot path).
          const ids = await applyMessage(trx, StoredMessage.parse(payload), { source, key, payload });
          return ids === null ? { kind: 'duplicate' as const, ids: [] } : { kind: 'processed' as const, ids };
        }
        const inserted = await trx
          .insertInto('inbound_events')
          .values({ source, external_key: key, payload: jsonb(payload), status: 'processed', attempts: 1, processed_at: sql`now()` })
          .onConflict((oc) => oc.columns(['source', 'external_key']).doNothing())
          .returning('id')
          .executeTakeFirst();
        if (inserted === undefined) return { kind: 'duplicate' as const, ids: [] };
        return { kind: 'processed' as const, ids: await apply(trx, source, payload) };
      });
      outboundIds.push(...outcome.ids);
      metrics.inboundEvents.inc({ source, outcome: outcome.kind });
      return outcome.kind;
    } catch (error) {
      // Not about anything of ours: nothing to keep (the caller says so).
      if (error instanceof UnknownReportError) throw error;
      if (error instanceof NotOurMessageError) return storeUnknown(source, key, payload);
      return storeForRetry(source, key, payload, error);
    }
  }

  /**
   * A status about no message of ours (NotOurMessageError): stored as processed with the reason
   * (a copy sent again is a duplicate), counted as unknown_message, never retried. The wamid is
   * not logged (it encodes the recipient's number).
   */
  async function storeUnknown(source: InboundSource, key: string, payload: unknown): Promise<'processed' | 'duplicate'> {
    const row = await db
      .insertInto('inbound_events')
      .values({ source, external_key: key, payload: jsonb(payload), status: 'processed', attempts: 1, processed_at: sql`now()`, last_error: NOT_OURS })
      .onConflict((oc) => oc.columns(['source', 'external_key']).doNothing())
      .returning('id')
      .executeTakeFirst();
    if (row === undefined) {
      metrics.inboundEvents.inc({ source, outcome: 'duplicate' });
      return 'duplicate';
    }
    countedUnknown(source, row.id, 1);
    return 'processed';
  }

  /**
   * A kept WhatsApp status (or SMS delivery report) whose message is still unknown: recorded as
   * processed (unknown_message) once no send on its channel is in flight, or when this was its
   * last try (however busy the sends, it is no fault of ours, and the SMS report route is
   * unsigned: not parked as dead, no error log). Otherwise null: an ordinary failed try.
   */
  async function settleUnknown(trx: Transaction<Database>, eventId: string, error: unknown): Promise<'processed' | 'not_pending' | null> {
    // WhatsApp statuses and SMS delivery reports alike: not matched while a send is in flight,
    // or about nothing of ours at all.
    const inFlight = error instanceof UnknownMessageError || error instanceof ReportNotYetMatchedError;
    if (!inFlight && !(error instanceof NotOurMessageError) && !(error instanceof UnknownReportError)) return null;
    const event = await trx
      .selectFrom('inbound_events')
      .select(['attempts', 'source'])
      .where('id', '=', eventId)
      .where('status', '=', 'retrying')
      .forUpdate()
      .executeTakeFirst();
    if (event === undefined) return 'not_pending';
    // Still possibly the in-flight send's: an ordinary failed try, unless it was the last.
    if (inFlight && event.attempts + 1 < deps.maxAttempts) return null;
    await trx
      .updateTable('inbound_events')
      .set({ status: 'processed', attempts: sql`attempts + 1`, processed_at: sql`now()`, last_error: event.source === 'sms_report' ? NOT_OURS_SMS : NOT_OURS, updated_at: sql`now()` })
      .where('id', '=', eventId)
      .execute();
    countedUnknown(event.source, eventId, event.attempts + 1);
    return 'processed';
  }

  /** An event recorded as about no message of ours: counted (unknown_message) and logged by its id (a wamid encodes a number). */
  function countedUnknown(source: InboundSource, eventId: string, attempts: number): void {
    metrics.inboundEvents.inc({ source, outcome: 'unknown_message' });
    logger.info({ source, event_id: eventId, attempts }, 'status for a message this service did not send (or whose send it did not record); recorded, not applied');
  }

  /**
   * Keeps an event that could not be applied for the retry job. If this insert fails too, the
   * error reaches the route, which answers 500 so the provider delivers the event again.
   */
  async function storeForRetry(source: InboundSource, key: string, payload: unknown, error: unknown): Promise<'duplicate' | 'retrying'> {
    const lastError = error instanceof Error ? error.message.slice(0, 500) : String(error);
    const level = error instanceof UnknownMessageError || error instanceof ReportNotYetMatchedError ? 'info' : 'warn';
    logger[level]({ source, error: lastError }, 'inbound event not applied; stored for retry');
    const stored = await db.transaction().execute(async (trx) => {
      const row = await trx
        .insertInto('inbound_events')
        .values({ source, external_key: key, payload: jsonb(payload), status: 'retrying', attempts: 1, last_error: lastError })
        .onConflict((oc) => oc.columns(['source', 'external_key']).doNothing())
        .returning('id')
        .executeTakeFirst();
      if (row !== undefined) await scheduleRetry(retrying, trx, retryJob, row.id, 1);
      return row;
    });
    metrics.inboundEvents.inc({ source, outcome: stored === undefined ? 'duplicate' : 'retrying' });
    return stored === undefined ? 'duplicate' : 'retrying';
  }

  async function retryEvent(eventId: string): Promise<'processed' | 'retrying' | 'dead' | 'not_pending'> {
    let source: InboundSource | undefined;
    try {
      const ids = await db.transaction().execute(async (trx) => {
        const event = await trx
          .selectFrom('inbound_events')
          .select(['id', 'source', 'payload', 'status'])
          .where('id', '=', eventId)
          // An event another service retries (a kept M-PESA callback) is never this job's, even
          // if an older machine's sweep queued it here.
          .$if(retriedElsewhere.length > 0, (qb) => qb.where('source', 'not in', retriedElsewhere))
          .forUpdate()
          .executeTakeFirst();
        if (event === undefined || event.status !== 'retrying') return null;
        source = event.source;
        const ids = await apply(trx, event.source, event.payload);
        await trx
          .updateTable('inbound_events')
          .set({ status: 'processed', attempts: sql`attempts + 1`, processed_at: sql`now()`, last_error: null, updated_at: sql`now()` })
          .where('id', '=', eventId)
          .execute();
        return ids;
      });
      if (ids === null) return 'not_pending';
      deps.outbox.dispatchSoon(ids);
      metrics.inboundEvents.inc({ source: source ?? 'whatsapp_message', outcome: 'processed' });
      return 'processed';
    } catch (error) {
      const lastError = error instanceof Error ? error.message.slice(0, 500) : String(error);
      return db.transaction().execute(async (trx) => (await settleUnknown(trx, eventId, error)) ?? afterFailedTry(retrying, trx, retryJob, eventId, lastError));
    }
  }

  /**
   * The last safety net for inbound events: one whose retry job is gone (it failed after all
   * its own retries, or was deleted; or an operator set a dead event back to 'retrying') would
   * otherwise wait forever. Each is queued again once per sweep; a retry that finds the event
   * already applied does nothing.
   */
  async function sweepRetries(): Promise<number> {
    const stuck = await db
      .selectFrom('inbound_events')
      .select(['id', 'source'])
      .where('status', '=', 'retrying')
      .where('updated_at', '<', sql<Date>`now() - make_interval(mins => ${STUCK_RETRY_MINUTES})`)
      .orderBy('updated_at')
      .limit(100)
      .execute();
    metrics.inboundStuck.set(stuck.length);
    if (stuck.length === 0) return 0;
    logger.warn({ events: stuck.length }, `inbound events waiting for a retry for ${STUCK_RETRY_MINUTES}+ minutes; queueing them again`);
    let queued = 0;
    for (const { id, source } of stuck) {
      queued += await db.transaction().execute(async (trx) => {
        const touched = await trx.updateTable('inbound_events').set({ updated_at: sql`now()` }).where('id', '=', id).where('status', '=', 'retrying').returning('id').executeTakeFirst();
        if (touched === undefined) return 0;
        await deps.jobs.enqueue(trx, deps.retryJobs?.[source] ?? retryJob, { eventId: id });
        return 1;
      });
    }
    return queued;
  }

  const retrySweepJob = scheduledJob('inbound-retry-sweep', () => sweepRetries());

  /**
   * Many senders' messages (one each) in one transaction: events, conversation locks and the
   * turns' facts in one statement (senders in sorted order, so two batches cannot deadlock on
   * each other), their new states with the replies and the replies' jobs in one.
   * If anything fails the batch rolls back and each message goes its own way (processEvent),
   * so one bad message costs the others nothing but time.
   */
  async function runBatch(items: readonly MessageItem[]): Promise<Array<ItemOutcome | Error>> {
    try {
      const outcomes = await db.transaction().execute(async (trx) => {
        // The same wamid twice in one group (from two senders: Meta never sends that, a forged
        // pair could): the first counts, the others are duplicates, as they would be one by one.
        const firstOfKey = new Map<string, MessageItem>();
        for (const item of items) if (!firstOfKey.has(item.key)) firstOfKey.set(item.key, item);
        const unique = [...firstOfKey.values()];
        const input = [...unique]
          .sort((a, b) => (a.stored.message.from < b.stored.message.from ? -1 : a.stored.message.from > b.stored.message.from ? 1 : 0))
          .map((item) => ({
            key: item.key,
            phone: item.stored.message.from,
            sent_at: new Date(Number(item.stored.message.timestamp) * 1000).toISOString(),
            payload: item.stored,
          }));
        const conversation = deps.conversation;
        const merged = conversation.prepare !== undefined && conversation.factsOf !== undefined;
        // The senders' conversation rows come back locked, with (when the handler can say what
        // its turns read) those facts: one round trip for events, locks and facts.
        const { rows } = await sql<SenderFacts>`
          with input as (
            select * from ${rowsOf('v', input, { key: 'text', phone: 'text', sent_at: 'timestamptz', payload: 'jsonb' })}
          ), event as (
            insert into inbound_events (source, external_key, payload, status, attempts, processed_at)
            select 'whatsapp_message', key, payload, 'processed', 1, now() from input order by phone
            on conflict (source, external_key) do nothing
            returning external_key
          ), senders as (
            insert into conversations (phone, state, last_inbound_at)
            select i.phone, '{"version":0}'::jsonb, least(i.sent_at, now()) from input i join event e on e.external_key = i.key order by i.phone
            on conflict (phone) do update
              set last_inbound_at = greatest(conversations.last_inbound_at, excluded.last_inbound_at), updated_at = now()
            returning phone, state, language
          )
          ${merged ? conversation.factsOf!(sql`senders`) : sql`select phone from senders`}`.execute(trx);
        const fresh = new Set(rows.map((row) => row.phone));
        const todo = unique.filter((item) => fresh.has(item.stored.message.from));
        const drafts = new Map<MessageItem, OutboundDraft[]>();
        let saveStatement: RawBuilder<unknown> | undefined;
        if (conversation.prepare !== undefined && todo.length > 0) {
          const phones = todo.map((item) => item.stored.message.from);
          const batch = await (merged ? conversation.prepare(trx, phones, rows) : conversation.prepare(trx, phones));
          for (const item of todo) drafts.set(item, await batch.run(conversationMessage(item.stored)));
          // The states go out in the same statement as the replies.
          saveStatement = batch.saveStatement();
        } else {
          for (const item of todo) drafts.set(item, await conversation(trx, conversationMessage(item.stored)));
        }
        const ids = await deps.outbox.enqueue(trx, todo.flatMap((item) => drafts.get(item) ?? []), saveStatement);
        let next = 0;
        return items.map((item): ItemOutcome => {
          const mine = drafts.get(item);
          if (mine === undefined) return { kind: 'duplicate', ids: [] };
          const slice = ids.slice(next, next + mine.length);
          next += mine.length;
          return { kind: 'processed', ids: slice };
        });
      });
      metrics.groupCommitSize.observe({ path: 'whatsapp_message' }, items.length);
      for (const outcome of outcomes) metrics.inboundEvents.inc({ source: 'whatsapp_message', outcome: outcome.kind });
      return outcomes;
    } catch (error) {
      logger.warn({ size: items.length, error: error instanceof Error ? error.message.slice(0, 500) : String(error) }, 'inbound batch rolled back; applying its messages one by one');
      // Each message gets a second try on its own, a group of one too: a passing failure (a
      // deadlock, say) then does not send it to the retry queue, where the sender's next
      // message could overtake it.
      const outcomes: Array<ItemOutcome | Error> = [];
      for (const item of items) {
        const ids: string[] = [];
        try {
          outcomes.push({ kind: await processEvent('whatsapp_message', item.key, item.stored, ids), ids });
        } catch (alone) {
          // Not even stored for a retry: only this message's request answers 500 (Meta sends it again).
          outcomes.push(alone instanceof Error ? alone : new Error(String(alone)));
        }
      }
      return outcomes;
    }
  }

  const batcher = createBatcher<MessageItem, ItemOutcome | Error>({
    // Large enough that a burst fills few groups (at 256 clients: 125 a group, about 20% more
    // messages a second than groups capped at 64).
    maxBatch: deps.batch?.maxBatch ?? 256,
    // One group at a time: concurrent groups' statements only queue behind each other, and
    // smaller groups cost more per message (bench/webhook.ts: half the ack latency at 500/s).
    maxConcurrent: deps.batch?.maxConcurrent ?? 1,
    // A group stuck (on a lock another machine holds, say) does not hold up everyone else's
    // messages: after half a second one more group may start beside it.
    spareAfterMs: 500,
    key: (item) => item.stored.message.from,
    run: runBatch,
  });

  return {
    async handleDeliveryReport(report) {
      const outboundIds: string[] = [];
      const outcome = await processEvent('sms_report', reportKey(report), report, outboundIds);
      deps.outbox.dispatchSoon(outboundIds);
      return outcome;
    },
    async handleIncomingSms(sms) {
      const outboundIds: string[] = [];
      const outcome = await processEvent('sms_message', sms.id, sms, outboundIds);
      deps.outbox.dispatchSoon(outboundIds);
      return outcome;
    },
    retryJob,
    retryEvent,
    sweepRetries,
    retrySweepJob,
    async handlePayload(payload) {
      const result: InboundResult = { processed: 0, duplicates: 0, retrying: 0, outboundIds: [] };
      const count = (outcome: 'processed' | 'duplicate' | 'retrying') => {
        if (outcome === 'processed') result.processed += 1;
        else if (outcome === 'duplicate') result.duplicates += 1;
        else result.retrying += 1;
      };
      // Changes for another number of the same Meta app are skipped: counted, logged once.
      const ours: Array<WebhookPayload['entry'][number]['changes'][number]['value']> = [];
      const foreign = new Set<string>();
      for (const entry of payload.entry) {
        for (const change of entry.changes) {
          const phoneId = change.value.metadata?.phone_number_id;
          if (deps.phoneId === undefined || phoneId === undefined || phoneId === deps.phoneId) {
            ours.push(change.value);
            continue;
          }
          foreign.add(phoneId);
          const { messages = [], statuses = [] } = change.value;
          if (messages.length > 0) metrics.inboundEvents.inc({ source: 'whatsapp_message', outcome: 'other_number' }, messages.length);
          if (statuses.length > 0) metrics.inboundEvents.inc({ source: 'whatsapp_status', outcome: 'other_number' }, statuses.length);
        }
      }
      if (foreign.size > 0) {
        // Meta's ids of business numbers, not people's numbers. The log scrubber masks any string
        // of 9-15 digits as a phone number, so each goes out as a JSON number when it is exact.
        const ids = [...foreign].map((id) => (/^[1-9]\d{0,14}$/.test(id) ? Number(id) : id));
        logger.warn({ phone_number_ids: ids }, 'webhook changes for another WhatsApp number of the Meta app skipped (not WABA_PHONE_ID)');
      }
      // Messages join the group commit (one sender's in order); statuses apply one by one.
      const messages: Array<Promise<ItemOutcome | Error>> = [];
      for (const value of ours) {
        const names = new Map((value.contacts ?? []).map((c) => [c.wa_id, c.profile?.name]));
        for (const message of value.messages ?? []) {
          const profileName = names.get(message.from);
          messages.push(batcher.submit({ key: message.id, stored: { message, ...(profileName === undefined ? {} : { profileName }) } }));
        }
      }
      let failure: unknown;
      for (const settled of await Promise.allSettled(messages)) {
        if (settled.status === 'rejected' || settled.value instanceof Error) {
          failure ??= settled.status === 'rejected' ? settled.reason : settled.value;
          continue;
        }
        count(settled.value.kind);
        result.outboundIds.push(...settled.value.ids);
      }
      try {
        if (failure !== undefined) throw failure;
        for (const value of ours) {
          for (const status of value.statuses ?? []) {
            count(await processEvent('whatsapp_status', `${status.id}:${status.status}`, { status }, result.outboundIds));
          }
        }
      } catch (error) {
        // The route answers 500 and Meta delivers the payload again (what committed is then a
        // duplicate); what did commit is delivered now rather than by the safety net.
        deps.outbox.dispatchSoon(result.outboundIds);
        throw error;
      }
      return result;
    },
    async storeRejected(rawBody, parsed, reason) {
      const key = sha256Hex(rawBody);
      // The raw text, cut at 100,000 UTF-16 units (jsonb() mends half an emoji at the cut).
      const payload = parsed === undefined ? { raw: Buffer.from(rawBody).toString('utf8').slice(0, 100_000) } : parsed;
      await db
        .insertInto('inbound_events')
        .values({ source: 'whatsapp_payload', external_key: key, payload: jsonb(payload), status: 'rejected', last_error: reason.slice(0, 500) })
        .onConflict((oc) => oc.columns(['source', 'external_key']).doNothing())
        .execute();
      metrics.inboundEvents.inc({ source: 'whatsapp_payload', outcome: 'rejected' });
    },
    async storeRejectedItems(items) {
      if (items.length === 0) return;
      // Keyed by the item itself: Meta sending the payload again (after a 500 for its other
      // items) stores nothing twice. The same bytes as another payload's item are the same item.
      const stored = await db
        .insertInto('inbound_events')
        .values(
          items.map(({ at, list, item, reason }) => ({
            source: 'whatsapp_payload' as const,
            external_key: sha256Hex(`${list}:${JSON.stringify(item)}`),
            payload: jsonb({ at, list, item }),
            status: 'rejected' as const,
            last_error: `${at}: ${reason}`.slice(0, 500),
          })),
        )
        .onConflict((oc) => oc.columns(['source', 'external_key']).doNothing())
        .returning('id')
        .execute();
      // Counted once each: a redelivery stores (and counts) nothing again.
      if (stored.length > 0) metrics.inboundEvents.inc({ source: 'whatsapp_payload', outcome: 'rejected' }, stored.length);
    },
  };
}
