/**
 * The outbound pipeline. Messages are outbox rows written in the transaction that caused
 * them, with a `deliver-messages` job for the write as the safety net (a retry or an SMS
 * fallback gets a `deliver-message` job of its own); the request that wrote them delivers
 * them right after commit ("eager dispatch"), so the job usually finds them sent.
 *
 * Delivery claims a row (queued -> sending) in a short transaction, calls the provider
 * outside any transaction, and records the outcome in another. A claim is what stops the
 * eager path and the job from sending one message twice; a claim older than
 * CLAIM_TIMEOUT_SECONDS (a crashed worker) may be taken again. A writer that dispatches as
 * soon as it commits (the payments path) may write its rows already claimed (enqueueClaimed),
 * which spares the claim statement; nothing else changes.
 */
import { createCoalescer } from '../batch.js';
import { anyOf, rowsOf, storable } from '../db/json.js';
import { randomInt, randomUUID } from 'node:crypto';
import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely';
import { z } from 'zod';
import type { Config } from '../config.js';
import type { Channel, Database } from '../db/schema.js';
import { invoicesReachedStatement, markInvoicesUnreached } from './invoice-reach.js';
import { RETRY_CAP_SECONDS, afterSmsFailure, afterWhatsAppFailure, chooseRoute, isSmsAccountProblem, type FailureDecision } from '../domain/delivery.js';
import { createSendPace } from './pace.js';
import { OutboundPayload, smsText, type OutboundDraft, type OutboundKind } from '../domain/outbound.js';
import { scheduledJob, type JobDefinition, type JobQueue, type NoJobData } from '../jobs/queue.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { ProviderError, describeDeliveryError, isDeliveryError, type DeliveryError } from '../providers/errors.js';
import type { SmsClient } from '../providers/sms/client.js';
import type { WhatsAppClient } from '../providers/whatsapp/client.js';

/** A claim older than this is renewed before its send (one send can take a WhatsApp and an SMS timeout). */
export const CLAIM_RENEW_AFTER_MS = 20_000;
/**
 * The longest a WhatsApp send waits for its slot in the send pace (src/delivery/pace.ts); one
 * whose slot is further away is put back for later, no try counted.
 */
export const PACE_MAX_WAIT_MS = 10_000;
/** The longest WABA_TIMEOUT_MS and SMS_TIMEOUT_MS the configuration accepts (src/config.ts). */
export const LONGEST_PROVIDER_TIMEOUT_MS = 60_000;
/**
 * A claim is never taken over while its send is in flight: a message is claimed (or its claim
 * renewed) less than CLAIM_RENEW_AFTER_MS before its send, which can wait PACE_MAX_WAIT_MS for
 * its slot and take a WhatsApp timeout and then an SMS timeout: at most 20 + 10 + 60 + 60 =
 * 150 s, inside this.
 */
export const CLAIM_TIMEOUT_SECONDS = 180;

/**
 * A send the provider accepted is recorded again and again (waits doubling from 0.2 s to 5 s)
 * for this long when the database refuses, rather than left claimed: once its claim timed out,
 * another worker would send it a second time. Recording checks the claim's stamp, so a late
 * success never writes over a worker that took the message over. Longer than the claim's own
 * life on purpose: during an outage no worker can take it over either, and the first statement
 * that works once the database is back is usually this one.
 */
export const RECORD_SENT_PATIENCE_MS = 5 * 60_000;

export type DeliveryOutcome = 'sent' | 'retry_scheduled' | 'fell_back' | 'failed' | 'not_pending' | 'busy';

/**
 * A message this worker holds the claim on (status sending, stamped `updated_at`), with what its
 * send needs: the recipient's last inbound message (the 24-hour window) and the write order to
 * the microsecond.
 */
type Claimed = {
  id: string;
  recipient: string;
  kind: string;
  content: unknown;
  channel: Channel | null;
  attempts: number;
  updated_at: Date;
  recipient_last_inbound_at: Date | null;
  write_order: string;
};

/**
 * What enqueueClaimed wrote: every row's id, the rows written already claimed by this process
 * (and when), and the rows written queued behind an older unsent message to the same person.
 */
export type Written = {
  readonly ids: readonly string[];
  readonly claimed: readonly Claimed[];
  readonly claimedAt: number;
  readonly queued: ReadonlyArray<{ readonly id: string; readonly recipient: string }>;
  /** How many rows each `counted` write alongside returned (AlongsideWrite). */
  readonly counts: Readonly<Record<string, number>>;
};

/**
 * A write of the caller's that runs in the same statement as the outbox rows, as a
 * data-modifying WITH: one round trip fewer each, in a transaction that holds locks until it
 * commits. `name` (lower-case letters and underscores) names it in `Written.counts`; the WITH
 * query itself is `alongside_<name>`, so it can hide no table the statement reads, nor the
 * outbox's own WITH queries. The writes see the statement's snapshot, not one another's
 * changes, so no two may change the same row. A `counted` write has a RETURNING clause: how
 * many rows it returned is in `Written.counts`.
 */
export type AlongsideWrite = { readonly name: string; readonly write: RawBuilder<unknown>; readonly counted?: boolean };

/** What an eager delivery did: each message's outcome, and the recipient of each it found. */
type Delivered = { outcomes: Map<string, DeliveryOutcome | Error>; recipients: Map<string, string> };

/** Nothing written. */
export const NOTHING_WRITTEN: Written = { ids: [], claimed: [], claimedAt: 0, queued: [], counts: {} };

export type Outbox = {
  /**
   * Writes drafts as outbox rows with their delivery jobs, inside `trx`. Returns the row ids.
   * `alongside`, a write of the caller's (what it returns is not read), runs in the same
   * statement as the rows, as a data-modifying WITH: one round trip less.
   */
  enqueue(trx: Transaction<Database>, drafts: readonly OutboundDraft[], alongside?: RawBuilder<unknown>): Promise<string[]>;
  /**
   * Writes drafts as enqueue does, but already claimed by this process (sending, stamped) where
   * nothing older to the same person is unsent, so that delivering them after commit
   * (dispatchWritten) takes no claim statement. For a caller that dispatches as soon as `trx`
   * commits: if it rolls back, the rows and their claims go with it; if the process dies first,
   * the claims time out and the jobs deliver them. A message that must wait behind an older one
   * to the same person is written queued, as by enqueue. The `alongside` writes run in the
   * same statement (AlongsideWrite), even with no drafts.
   */
  enqueueClaimed(trx: Transaction<Database>, drafts: readonly OutboundDraft[], alongside?: readonly AlongsideWrite[]): Promise<Written>;
  /**
   * Queues an existing row again for SMS (a `failed` status report). At most once per message:
   * one that fell back already fails for good instead. Returns what to dispatch after commit:
   * the message (its SMS), or any notice its failure brings (its invoice reached nobody).
   */
  fallBackToSms(trx: Transaction<Database>, messageId: string, reason: string): Promise<string[]>;
  /** Tries to deliver one message now. Safe to call any number of times, concurrently. */
  deliver(messageId: string): Promise<DeliveryOutcome>;
  /** Delivers several: one claim statement, each recipient's messages in write order; an unexpected error is that message's outcome. */
  deliverMany(messageIds: readonly string[]): Promise<Map<string, DeliveryOutcome | Error>>;
  /** Eager dispatch after commit: delivers in the background (from the next event-loop turn), logging, never throwing. */
  dispatchSoon(messageIds: readonly string[]): void;
  /**
   * Eager dispatch after commit of what enqueueClaimed wrote: its claimed rows without a claim
   * statement; the rest as dispatchSoon, or, when written queued behind a message this process
   * is sending to the same person, once that send is over.
   */
  dispatchWritten(written: Written): void;
  /**
   * Resolves when every background dispatch started so far has finished, and no message waits
   * for a send to its person to end (tests, shutdown).
   */
  idle(): Promise<void>;
  /**
   * Shutdown's first step (before the job workers stop): no send starts any more. Sends waiting
   * for their turn in the pace, and every message claimed from now on, are put back for their
   * jobs (no try counted); sends in flight finish and are recorded.
   */
  beginStop(): void;
  /**
   * Shutdown: beginStop(); a message that cannot go yet is left to its job at once (no more
   * eager tries, which may span seconds); then as idle().
   */
  stop(): Promise<void>;
  readonly job: JobDefinition<typeof DeliverJobData>;
  /** The safety net of a write: one job for the messages one write wrote. */
  readonly writeJob: JobDefinition<typeof DeliverWriteJobData>;
  /** Delivers again what has been queued or sending for STUCK_AFTER_MINUTES (its job gone or exhausted). */
  sweep(): Promise<number>;
  readonly sweepJob: JobDefinition<NoJobData>;
};

/** Far beyond any retry delay (backoff caps at 5 minutes) and any claim (3 minutes). */
export const STUCK_AFTER_MINUTES = 30;

/** Message ids one safety-net job carries at most (a write of more gets several jobs). */
export const IDS_PER_JOB = 128;
/** A delivery job of one message (`deliver-message`: a retry, a fallback to SMS). */
const DeliverJobData = z.object({ messageId: z.uuid() });
/**
 * The safety net of one write (`deliver-messages`): its messages, one job for them all. A queue
 * of its own, which a release that did not know it never fetches: an older machine during a
 * rolling deploy (or after a rollback) leaves these jobs waiting instead of dropping their
 * data as invalid for `deliver-message`.
 */
const DeliverWriteJobData = z.object({ messageIds: z.array(z.uuid()).min(1).max(IDS_PER_JOB) });
const idsOf = (data: z.infer<typeof DeliverJobData> | z.infer<typeof DeliverWriteJobData>): readonly string[] => ('messageIds' in data ? data.messageIds : [data.messageId]);
/** Ids delivered together by one fetched batch of jobs at most (one claim statement each). */
const IDS_PER_DELIVERY = 256;
/**
 * Times an eagerly dispatched message that waits behind another is tried again on a timer
 * (5 to 320 ms), before the settled tries below, then its job. Per dispatch: a message woken
 * after waiting for a send to its person (waitIfSending) starts afresh.
 */
const EAGER_REDISPATCH_ROUNDS = 7;
/** The first pause before such a try (ms); each next one is twice as long. */
const REDISPATCH_PAUSE_MS = 5;
/**
 * Then, tries each made once every dispatch this process was running has settled, and 320 ms
 * more: the older message may be in one of them, not yet counted as being sent to (its claim
 * statement waiting for a connection or a lock under load, or itself between two tries). Under
 * load those waits stretch with the load; idle, these tries span about 6 s, and then the job.
 */
const SETTLED_REDISPATCH_ROUNDS = 20;

/** Thrown by the job when the message cannot go yet: pg-boss retries it later. */
class MessageBusyError extends Error {}
const BUSY = 'another worker is delivering this message, or an earlier one to the same person is not sent yet';

export type OutboxDeps = {
  db: Kysely<Database>;
  jobs: Pick<JobQueue, 'enqueue' | 'enqueueMany' | 'insertStatement'>;
  whatsapp: WhatsAppClient;
  sms: SmsClient;
  config: Pick<Config, 'whatsapp' | 'delivery'>;
  metrics: Metrics;
  logger: Logger;
  now?: () => Date;
  random?: () => number;
  /** A claim older than this is renewed before its send (default 20 s; tests shorten it). */
  claimRenewAfterMs?: number;
  /** How long a send that went is tried to be recorded when the database refuses (default RECORD_SENT_PATIENCE_MS; tests shorten it). */
  recordSentPatienceMs?: number;
  /** The longest a WhatsApp send waits for its slot in the pace (default PACE_MAX_WAIT_MS; tests shorten it). */
  paceMaxWaitMs?: number;
};

export function createOutbox(deps: OutboxDeps): Outbox {
  const now = deps.now ?? (() => new Date());
  const random = deps.random ?? (() => randomInt(0, 1_000_000) / 1_000_000);
  const { db, metrics, logger } = deps;
  const renewAfterMs = deps.claimRenewAfterMs ?? CLAIM_RENEW_AFTER_MS;
  /** WhatsApp sends go out at most config.whatsapp.maxSendsPerSecond a second (Meta's per-number throughput). */
  const pace = createSendPace(deps.config.whatsapp.maxSendsPerSecond);
  const paceMaxWaitMs = deps.paceMaxWaitMs ?? PACE_MAX_WAIT_MS;
  const inFlight = new Set<Promise<unknown>>();
  const dispatchQueue: string[] = [];
  /**
   * Recipients this process is sending to now, and how many of its sends to each are running
   * (sendClaimed's, counted from dispatchWritten for the rows written claimed).
   */
  const sendingTo = new Map<string, number>();
  /**
   * Messages that wait for an older message to the same person while this process is sending
   * to that person (written queued, or answered busy): dispatched as soon as this process's
   * sends to that person are all over, instead of trying a claim that must fail now and then
   * again on a timer. Their jobs remain the safety net.
   */
  const waitingFor = new Map<string, Set<string>>();
  /** Set by stop(): busy messages are left to their jobs instead of being tried again. */
  let stopping = false;
  /** Set by beginStop(): no send starts any more; a claimed message is put back for its job. */
  let sendsClosed = false;

  /**
   * Message `id` goes when this process's sends to `recipient` are over, if any is running
   * (true); false when none is (the caller tries it otherwise).
   */
  function waitIfSending(recipient: string | undefined, id: string): boolean {
    if (recipient === undefined || !sendingTo.has(recipient)) return false;
    const waiting = waitingFor.get(recipient);
    if (waiting === undefined) waitingFor.set(recipient, new Set([id]));
    else waiting.add(id);
    return true;
  }

  /** A send to `recipient` starts (sendClaimed, or dispatchWritten ahead of it). */
  function sendingStarts(recipient: string): void {
    sendingTo.set(recipient, (sendingTo.get(recipient) ?? 0) + 1);
  }

  /** A send to `recipient` is over: the last one running wakes the messages waiting for it. */
  function sendingEnds(recipient: string): void {
    const left = (sendingTo.get(recipient) ?? 1) - 1;
    if (left > 0) {
      sendingTo.set(recipient, left);
      return;
    }
    sendingTo.delete(recipient);
    const waiting = waitingFor.get(recipient);
    if (waiting === undefined) return;
    waitingFor.delete(recipient);
    dispatchSoon([...waiting]);
  }

  /**
   * Eager delivery of `ids` once `after` has settled. A message answered busy waits behind an
   * older message to the same person (each person's messages go in order). If this process is
   * sending to that person, it goes as soon as those sends are over (waitIfSending). Otherwise the
   * older one was most often sent meanwhile, or is about to be by another dispatch of this
   * process: it is tried again after a short pause, doubling, a few times (5 to 320 ms), then
   * a few times more once the dispatches running then have settled (one may be claiming the
   * older message slowly). After that (another worker's message, a retry waiting for its
   * time), its job is the safety net. A message woken after waiting starts its tries afresh.
   */
  function dispatch(deliverNow: () => Promise<Delivered>, round: number, after: Promise<unknown>): void {
    const run = after.then(async () => {
      let delivered: Delivered;
      try {
        delivered = await deliverNow();
      } catch (error) {
        // Per-message failures are logged inside; this is the claim itself failing.
        logger.error({ error }, 'eager delivery failed; the jobs will retry');
        return;
      }
      const waiting: string[] = [];
      for (const [id, outcome] of delivered.outcomes) {
        // Behind a message this process is sending to the same person: it goes when that has gone.
        if (outcome === 'busy' && !waitIfSending(delivered.recipients.get(id), id)) waiting.push(id);
      }
      if (waiting.length === 0 || stopping || round >= EAGER_REDISPATCH_ROUNDS + SETTLED_REDISPATCH_ROUNDS) return;
      const others = round < EAGER_REDISPATCH_ROUNDS ? [] : [...inFlight].filter((other) => other !== tracked);
      const pause = Promise.allSettled(others).then(() => new Promise((resolve) => setTimeout(resolve, REDISPATCH_PAUSE_MS * 2 ** Math.min(round, EAGER_REDISPATCH_ROUNDS - 1))));
      dispatch(() => deliverManyTo(waiting), round + 1, pause);
    });
    const tracked: Promise<void> = run.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
  }

  /** A delivery job kind: delivers its message ids, fetched batches in chunks of at most IDS_PER_DELIVERY ids. */
  function deliveryJob<S extends typeof DeliverJobData | typeof DeliverWriteJobData>(name: string, schema: S): JobDefinition<S> {
    return {
      name,
      schema,
      retryLimit: 20,
      retryDelaySeconds: 5,
      retryBackoff: true,
      batchSize: 50,
      async handle(data) {
        const error = jobError(idsOf(data), await deliverMany(idsOf(data)));
        if (error !== undefined) throw error;
      },
      async handleBatch(items) {
        // Several jobs at once, in chunks of at most IDS_PER_DELIVERY ids (a job's own ids together).
        const errors: Array<Error | undefined> = [];
        let chunk: Array<(typeof items)[number]> = [];
        let size = 0;
        const flush = async (): Promise<void> => {
          if (chunk.length === 0) return;
          const outcomes = await deliverMany(chunk.flatMap((item) => idsOf(item.data)));
          for (const item of chunk) errors.push(jobError(idsOf(item.data), outcomes));
          chunk = [];
          size = 0;
        };
        for (const item of items) {
          if (size > 0 && size + idsOf(item.data).length > IDS_PER_DELIVERY) await flush();
          chunk.push(item);
          size += idsOf(item.data).length;
        }
        await flush();
        return errors;
      },
    };
  }
  const job = deliveryJob('deliver-message', DeliverJobData);
  const writeJob = deliveryJob('deliver-messages', DeliverWriteJobData);

  /**
   * A job is done when each of its messages is: an unexpected error fails it (that error), and
   * so does a message that cannot go yet (busy): pg-boss tries the job again later, and the
   * messages already done answer not_pending then.
   */
  function jobError(ids: readonly string[], outcomes: Map<string, DeliveryOutcome | Error>): Error | undefined {
    let busy = false;
    for (const id of ids) {
      const outcome = outcomes.get(id);
      if (outcome instanceof Error) return outcome;
      if (outcome === 'busy') busy = true;
    }
    return busy ? new MessageBusyError(BUSY) : undefined;
  }

  async function scheduleJob(trx: Transaction<Database>, messageId: string, delaySeconds: number): Promise<void> {
    await deps.jobs.enqueue(trx, job, { messageId }, { startAfterSeconds: Math.max(0, Math.ceil(delaySeconds)) });
  }

  /**
   * Whether the row `m` may be claimed now: queued (or its claim timed out) and due (a retry
   * waits for its time, whichever job or dispatch comes first).
   */
  const claimable = (m: string) => sql<boolean>`(
    (${statusOf(m)} = 'queued'
      or (${statusOf(m)} = 'sending' and ${sql.ref(`${m}.updated_at`)} < now() - make_interval(secs => ${CLAIM_TIMEOUT_SECONDS})))
    and ${due(m)})`;
  /**
   * The row `m`'s status, for a statement that names its rows by id. Compared plainly
   * (`status = 'sending'`), the status lets the planner prove the partial indexes' condition
   * (unsent rows) and read the whole of one, as a bitmap, to AND it with the ids: every unsent
   * row, and every entry left by a row sent since the last vacuum (a bitmap scan never marks
   * those dead, so they pile up under load). bench/callbacks.ts at 256 clients did that in
   * recordSent and claim (the bitmap work was about a tenth of Postgres's CPU, perf), and in the
   * check of rows written claimed (giveBackOvertaking: 2,119 to 7,833 entries a call). Through
   * coalesce (status is never null: the same test) the ids are looked up by primary key.
   */
  const statusOf = (m: string) => sql`coalesce(${sql.ref(`${m}.status`)}, '')`;
  /** Whether the row `m`'s retry (if any) is due. */
  const due = (m: string) => sql<boolean>`(${sql.ref(`${m}.next_attempt_at`)} is null or ${sql.ref(`${m}.next_attempt_at`)} <= now())`;

  /**
   * Claims the claimable ones among `messageIds` in one statement. A message waits while an
   * older one to the same person is unsent, unless that one is claimed here too (then it goes
   * first): each person's messages go out in the order they were written, whichever worker,
   * job or dispatch holds them.
   */
  async function claim(messageIds: readonly string[]) {
    return db
      .updateTable('outbound_messages')
      // To the millisecond, as a JS Date holds it: renewClaim recognises its own claim by it.
      .set({ status: 'sending', updated_at: sql`date_trunc('milliseconds', now())` })
      .where(anyOf('id', messageIds, 'uuid'))
      .where(claimable('outbound_messages'))
      .where(
        sql<boolean>`not exists (
          select 1 from outbound_messages older
          where older.recipient = outbound_messages.recipient
            and older.status in ('queued', 'sending')
            and (older.created_at, older.id) < (outbound_messages.created_at, outbound_messages.id)
            and not (${anyOf('older.id', messageIds, 'uuid')} and ${claimable('older')})
        )`,
      )
      .returningAll()
      // The recipient's window comes back with the claim: one round trip, not two.
      .returning((eb) =>
        eb
          .selectFrom('conversations')
          .select('conversations.last_inbound_at')
          .whereRef('conversations.phone', '=', 'outbound_messages.recipient')
          .as('recipient_last_inbound_at'),
      )
      // The write order to the microsecond (a JS Date keeps milliseconds: rows written by one
      // statement would tie), so each recipient's messages go out in the order they were written.
      .returning(sql<string>`to_char(outbound_messages.created_at at time zone 'UTC', 'YYYYMMDDHH24MISSUS')`.as('write_order'))
      .execute();
  }

  /**
   * Gives back (queued again, only while the claim is ours: same stamp) the claimed rows that
   * an older unsent message to the same person, not claimed here, would be overtaken by, and,
   * for rows just written claimed (`written`), those that would go out at the same time as a
   * newer one being sent (under a live claim, not ours). Returns the ids given back.
   *
   * The second case: two writes claimed in overlapping transactions (dispatchWritten), the one
   * that inserted first committing last. Neither insert saw the other's rows; the newer write,
   * committed first, is being sent when this one commits. Its rows are not older, so the first
   * case lets this write through, and the person would get the two interleaved. Given back,
   * this write's rows wait for those sends to end and then go (in commit order). Only for
   * fresh writes: an older message can also be unsent again while a newer one is being sent
   * when it falls back to SMS after a `failed` report, and such a fallback must not wait (a
   * batch of jobs asking for it with another message answered busy would give it back on every
   * try).
   *
   * Why: claim's `not exists` is judged on the statement's snapshot. On Postgres, when it waits
   * for another worker's lock on an older message in `messageIds` and that worker commits its
   * claim, READ COMMITTED re-checks only the locked row (it is skipped), not the newer rows
   * whose check counted on claiming it: they are claimed anyway. This statement runs after the
   * claim returned, so with a fresh snapshot that includes that commit (the claim waited for
   * it). Any older message asked for that the claim failed to take was either unsent and
   * unclaimable in its snapshot (then its newer ones were not claimed at all) or changed by a
   * transaction committed before the claim returned: seen here.
   *
   * Chosen over locking every recipient's unsent rows in order first, or REPEATABLE READ with
   * retries, because of cost on the hot path: this runs only when the claim took fewer rows
   * than asked (the race needs an older message it asked for and did not get), so the usual
   * eager delivery of fresh messages pays nothing, and otherwise one statement. It needs no
   * transaction with the claim: until given back, the rows carry our fresh claim stamp, which
   * no other worker can claim for CLAIM_TIMEOUT_SECONDS (they answer busy meanwhile). On PGlite
   * (one connection, no race) it finds nothing to give back.
   */
  async function giveBackOvertaking(claimed: readonly Claimed[], written: boolean): Promise<Set<string>> {
    const ids = claimed.map((m) => m.id);
    const { rows } = await sql<{ id: string }>`
      update outbound_messages o
      set status = 'queued'
      where ${anyOf('o.id', ids, 'uuid')} and ${statusOf('o')} = 'sending' and o.updated_at = ${claimed[0]!.updated_at}
        -- Two subqueries, not one with an OR: each is then an index scan of the person's unsent
        -- rows (one OR across them made Postgres hash every unsent row of the table).
        and (
          exists (
            select 1 from outbound_messages older
            where older.recipient = o.recipient
              and older.status in ('queued', 'sending')
              and (older.created_at, older.id) < (o.created_at, o.id)
              and not (${anyOf('older.id', ids, 'uuid')})
          )
          ${written ? sql`or exists (
            select 1 from outbound_messages newer
            where newer.recipient = o.recipient
              and newer.status = 'sending'
              and newer.updated_at >= now() - make_interval(secs => ${CLAIM_TIMEOUT_SECONDS})
              and not (${anyOf('newer.id', ids, 'uuid')})
          )` : sql``}
        )
      returning o.id`.execute(db);
    return new Set(rows.map((row) => row.id));
  }

  /**
   * giveBackOvertaking, or, if that statement fails, every claim given back (nothing has been
   * sent yet) before the error goes on: left claimed, the messages would wait out the claim
   * timeout, their jobs answered busy meanwhile.
   */
  async function giveBackOrRelease(claimed: readonly Claimed[], written = false): Promise<Set<string>> {
    try {
      return await giveBackOvertaking(claimed, written);
    } catch (error) {
      await releaseOrLog(claimed);
      throw error;
    }
  }

  /**
   * Renews a claim taken a while ago, just before its send, if it is still ours (nobody took
   * it over after CLAIM_TIMEOUT_SECONDS). False: another worker has the message now.
   */
  async function renewClaim(message: Claimed): Promise<boolean> {
    const renewed = await db
      .updateTable('outbound_messages')
      .set({ updated_at: sql`date_trunc('milliseconds', now())` })
      .where('id', '=', message.id)
      .where('status', '=', 'sending')
      .where('updated_at', '=', message.updated_at)
      .returning('updated_at')
      .executeTakeFirst();
    if (renewed === undefined) return false;
    // The claim's stamp is now this: what is recorded after the send is checked against it.
    message.updated_at = renewed.updated_at;
    return true;
  }

  /**
   * release(), logging instead of throwing when the database refuses: the claims then stay
   * until they time out, and their jobs send the messages after that.
   */
  function releaseOrLog(messages: readonly Claimed[]): Promise<void> {
    return release(messages).catch((error: unknown) => logger.error({ messages: messages.length, error }, 'claims could not be given back; they time out'));
  }

  /** Gives claims back (still ours: same stamp), unsent: the messages are queued again. */
  async function release(messages: readonly Claimed[]): Promise<void> {
    await db
      .updateTable('outbound_messages')
      .set({ status: 'queued' })
      .where(anyOf('id', messages.map((m) => m.id), 'uuid'))
      .where('status', '=', 'sending')
      .where('updated_at', '=', messages[0]!.updated_at)
      .execute();
  }
  /** A send that succeeded, and the stamp of the claim it was made under. */
  type Sent = { id: string; channel: 'whatsapp' | 'sms'; wamid: string | null; sms_id: string | null; attempts: number; stamp: Date; kind: string };

  /** Sends that succeeded, recorded together when they finish in the same turn of the event loop. */
  const sent = createCoalescer<Sent>(async (records) => {
    try {
      await recordSent(records);
    } catch (error) {
      // One bad row must not leave the others unrecorded (they would be sent again): each on
      // its own, tried again while the database refuses, and only those that never go fail.
      const each = await Promise.allSettled(records.map((record) => recordSentPatiently(record, error)));
      return each.map((r) => (r.status === 'fulfilled' ? undefined : r.reason instanceof Error ? r.reason : new Error(String(r.reason))));
    }
  });
  const recordSentPatienceMs = deps.recordSentPatienceMs ?? RECORD_SENT_PATIENCE_MS;
  const errorText = (error: unknown) => (error instanceof Error ? error.message : String(error)).slice(0, 500);

  /**
   * One success whose recording failed (`first`), recorded again until it goes, the patience
   * runs out, or the process stops (RECORD_SENT_PATIENCE_MS). Gives up with an error log: the
   * message stays claimed, and is sent again once its claim times out.
   */
  async function recordSentPatiently(record: Sent, first: unknown): Promise<void> {
    const giveUpAt = performance.now() + recordSentPatienceMs;
    let waitMs = 200;
    let tries = 1;
    let last = first;
    logger.warn({ message_id: record.id, error: errorText(first) }, 'sent, but recording it failed; trying again');
    while (!stopping && performance.now() + waitMs < giveUpAt) {
      await new Promise((resolve) => setTimeout(resolve, waitMs));
      waitMs = Math.min(waitMs * 2, 5_000);
      tries += 1;
      try {
        await recordSent([record]);
        logger.info({ message_id: record.id, tries }, 'sent, recorded after the database refused');
        return;
      } catch (error) {
        last = error;
      }
    }
    logger.error({ message_id: record.id, tries, error: errorText(last) }, 'sent, but never recorded: it will be sent again once its claim times out');
    throw last instanceof Error ? last : new Error(String(last));
  }

  /**
   * Records successes, each only where its claim still holds (status sending, the same stamp).
   * A claim lost during the send (the send outlived CLAIM_TIMEOUT_SECONDS and another worker
   * took the message over) is not written over: that worker's outcome stands. It is logged,
   * because the person may have been sent the message twice.
   */
  async function recordSent(records: readonly Sent[]): Promise<void> {
    // An invoice that had reached its customer on no channel has now (its own message or a
    // reminder). Chat replies, most of what goes out, skip that part.
    const reaching = records.some((r) => r.kind === 'invoice' || r.kind === 'reminder');
    const { rows } = await sql<{ id: string }>`
      with recorded as (
        update outbound_messages o
        set status = 'sent', channel = v.channel, attempts = v.attempts, last_error = null, updated_at = now(),
          provider_message_id = coalesce(v.wamid, o.provider_message_id), sms_message_id = coalesce(v.sms_id, o.sms_message_id)
        from ${rowsOf('v', records, { id: 'uuid', channel: 'text', wamid: 'text', sms_id: 'text', attempts: 'integer', stamp: 'timestamptz' })}
        where o.id = v.id and ${statusOf('o')} = 'sending' and o.updated_at = v.stamp
        returning o.id
      )${reaching ? sql`, reached as (${invoicesReachedStatement(sql`select id from recorded`)})` : sql``}
      select id from recorded`.execute(db);
    if (rows.length === records.length) return;
    const recorded = new Set(rows.map((row) => row.id));
    for (const record of records.filter((r) => !recorded.has(r.id))) {
      metrics.claimsLost.inc({ step: 'sent' });
      logger.warn({ message_id: record.id, channel: record.channel }, 'sent after another worker took the message over (claim timed out during the send): it may have gone twice; not recorded over that worker');
    }
  }

  /**
   * Locks the row if the claim stamped `stamp` still holds. False: another worker took the
   * message over while this one was sending; what this one learnt must not be written.
   */
  async function holdsClaim(trx: Transaction<Database>, messageId: string, stamp: Date): Promise<boolean> {
    const row = await trx
      .selectFrom('outbound_messages')
      .select('id')
      .where('id', '=', messageId)
      .where('status', '=', 'sending')
      .where('updated_at', '=', stamp)
      .forUpdate()
      .executeTakeFirst();
    return row !== undefined;
  }

  async function recordFailure(
    message: Claimed,
    channel: 'whatsapp' | 'sms',
    error: DeliveryError,
    decision: FailureDecision,
  ): Promise<DeliveryOutcome> {
    const messageId = message.id;
    const lastError = describeDeliveryError(error);
    // Notices to merchants whose invoice this failure left unreached: sent once committed.
    const notices: string[] = [];
    const outcome = await db.transaction().execute(async (trx): Promise<DeliveryOutcome> => {
      if (!(await holdsClaim(trx, messageId, message.updated_at))) {
        // No retry, no fallback, no "failed" over the worker that has the message now.
        metrics.claimsLost.inc({ step: 'failure' });
        logger.warn({ message_id: messageId, channel }, 'send failed after another worker took the message over: its outcome stands');
        return 'busy';
      }
      switch (decision.action) {
        case 'retry':
          metrics.deliveryRetries.inc({ channel });
          await trx
            .updateTable('outbound_messages')
            .set({
              status: 'queued',
              channel,
              attempts: sql`attempts + 1`,
              last_error: lastError,
              updated_at: sql`now()`,
              next_attempt_at: sql`now() + make_interval(secs => ${decision.delaySeconds})`,
            })
            .where('id', '=', messageId)
            .execute();
          await scheduleJob(trx, messageId, decision.delaySeconds);
          return 'retry_scheduled';
        case 'fallback': {
          const fell = await fallBackToSms(trx, messageId, decision.reason, lastError);
          notices.push(...fell.notices);
          return fell.fellBack ? 'fell_back' : 'failed';
        }
        case 'fail':
          metrics.messagesSent.inc({ channel, outcome: 'failed' });
          await trx
            .updateTable('outbound_messages')
            .set({ status: 'failed', channel, attempts: sql`attempts + 1`, last_error: lastError, updated_at: sql`now()` })
            .where('id', '=', messageId)
            .execute();
          notices.push(...(await markInvoicesUnreached(trx, [messageId], { enqueue })));
          return 'failed';
      }
    });
    dispatchSoon(notices);
    return outcome;
  }

  /**
   * A claimed message that does not go now: its turn in the send pace is further away than a
   * send may wait, or shutdown has begun. Queued again (only while the claim is ours) for a later
   * turn, by its job or the next dispatch, with no try counted (the provider never saw it) and
   * its error left as it was. The person's later messages wait for it, as behind any retry.
   */
  async function putBack(message: Claimed): Promise<DeliveryOutcome> {
    metrics.whatsappPaced.inc({ outcome: 'deferred' });
    // Its own later turn (the ones put back together come back spread at the rate), within the
    // longest any retry waits: it holds up the person's later messages meanwhile.
    const delaySeconds = Math.min(RETRY_CAP_SECONDS, Math.max(1, Math.round(pace.laterTurnMs() / 100) / 10));
    return db.transaction().execute(async (trx): Promise<DeliveryOutcome> => {
      if (!(await holdsClaim(trx, message.id, message.updated_at))) return 'busy';
      await trx
        .updateTable('outbound_messages')
        .set({ status: 'queued', updated_at: sql`now()`, next_attempt_at: sql`now() + make_interval(secs => ${delaySeconds})` })
        .where('id', '=', message.id)
        .execute();
      await scheduleJob(trx, message.id, delaySeconds);
      return 'retry_scheduled';
    });
  }

  /**
   * Ends for good, at once, a claimed message whose stored content OutboundPayload no longer
   * accepts (a row written by an older version, or edited by hand). Left claimed it would be
   * taken again after every claim timeout, fail again, forever, and hold back all of the
   * person's later messages (they go in write order); no retry can make it readable. A final
   * failure like any other: counted, and its invoice (if it is the invoice's own) unreached.
   * What was wrong is said by where and what kind, never by value: no content, no number.
   */
  async function failUnreadable(message: Claimed, error: z.ZodError): Promise<DeliveryOutcome> {
    const messageId = message.id;
    const issues = error.issues
      .slice(0, 5)
      .map((issue) => `${issue.path.map(String).join('.') || '(root)'}: ${issue.code}`)
      .join('; ');
    const lastError = `stored content unreadable, not sent (${issues})`.slice(0, 500);
    const notices: string[] = [];
    const outcome = await db.transaction().execute(async (trx): Promise<DeliveryOutcome> => {
      if (!(await holdsClaim(trx, messageId, message.updated_at))) {
        metrics.claimsLost.inc({ step: 'failure' });
        logger.warn({ message_id: messageId }, 'unreadable message taken over by another worker: its outcome stands');
        return 'busy';
      }
      await trx
        .updateTable('outbound_messages')
        .set({ status: 'failed', last_error: lastError, updated_at: sql`now()` })
        .where('id', '=', messageId)
        .execute();
      // Unreached, but not for the reason the merchant's notice gives (their customer's number
      // failing on WhatsApp and SMS): the fault is ours, and the error log below is the signal.
      // The merchant sees the invoice as not delivered in list and status.
      notices.push(...(await markInvoicesUnreached(trx, [messageId], { enqueue }, { notify: false })));
      return 'failed';
    });
    if (outcome !== 'failed') return outcome;
    // No channel was tried: 'none' (never routed) unless an earlier try had set one.
    metrics.messagesSent.inc({ channel: message.channel ?? 'none', outcome: 'failed' });
    logger.error({ message_id: messageId, kind: message.kind, issues }, "outbound message content cannot be read: failed for good, not sent; the person's later messages go ahead");
    dispatchSoon(notices);
    return 'failed';
  }

  /**
   * Marks the row for SMS (once: `fell_back_at is null`) and schedules its delivery. A row that
   * fell back already fails instead; `notices` are what that failure brings (written in `trx`).
   */
  async function fallBackToSms(
    trx: Transaction<Database>,
    messageId: string,
    reason: string,
    lastError?: string,
  ): Promise<{ fellBack: boolean; notices: string[] }> {
    const updated = await trx
      .updateTable('outbound_messages')
      .set({
        status: 'queued',
        channel: 'sms',
        attempts: 0,
        fallback_reason: reason,
        fell_back_at: sql`now()`,
        updated_at: sql`now()`,
        next_attempt_at: null,
        ...(lastError === undefined ? {} : { last_error: lastError }),
      })
      .where('id', '=', messageId)
      .where('fell_back_at', 'is', null)
      .returning('id')
      .executeTakeFirst();
    if (updated === undefined) {
      // Already fell back once: a second WhatsApp failure report changes nothing; an
      // SMS-side failure ends the message.
      await trx
        .updateTable('outbound_messages')
        .set({ status: 'failed', updated_at: sql`now()`, ...(lastError === undefined ? {} : { last_error: lastError }) })
        .where('id', '=', messageId)
        .where('status', 'in', ['queued', 'sending'])
        .execute();
      return { fellBack: false, notices: await markInvoicesUnreached(trx, [messageId], { enqueue }) };
    }
    metrics.fallbacks.inc({ reason: reason.replace(/^whatsapp_error_.*/, 'whatsapp_error').replace(/^status_failed_.*/, 'status_failed') });
    await scheduleJob(trx, messageId, 0);
    return { fellBack: true, notices: [] };
  }

  /**
   * The last safety net: a message whose job is gone (deleted, or failed after all its
   * retries) would otherwise wait forever. Claims keep this from racing a live worker.
   */
  async function sweep(): Promise<number> {
    const rows = await db
      .selectFrom('outbound_messages')
      .select('id')
      .where('status', 'in', ['queued', 'sending'])
      .where('updated_at', '<', sql<Date>`now() - make_interval(mins => ${STUCK_AFTER_MINUTES})`)
      .orderBy('updated_at')
      .limit(100)
      .execute();
    metrics.outboxStuck.set(rows.length);
    if (rows.length === 0) return 0;
    logger.warn({ messages: rows.length }, `outbound messages stuck for ${STUCK_AFTER_MINUTES}+ minutes; delivering them again`);
    await deliverMany(rows.map((row) => row.id));
    return rows.length;
  }

  async function deliver(messageId: string): Promise<DeliveryOutcome> {
    const outcome = (await deliverMany([messageId])).get(messageId) ?? 'not_pending';
    if (outcome instanceof Error) throw outcome;
    return outcome;
  }

  /**
   * Delivers several messages: one statement claims them all, each recipient's messages go
   * out in the order they were written (different recipients at once), and the successes are
   * recorded in one statement. Failures take the per-message path (retry or fall back).
   */
  async function deliverMany(messageIds: readonly string[]): Promise<Map<string, DeliveryOutcome | Error>> {
    return (await deliverManyTo(messageIds)).outcomes;
  }

  /** deliverMany, with the recipient of each message it claimed or found waiting. */
  async function deliverManyTo(messageIds: readonly string[]): Promise<Delivered> {
    if (messageIds.length === 0) return { outcomes: new Map(), recipients: new Map() };
    let claimed: Claimed[] = await claim(messageIds);
    const claimedAt = performance.now();
    // Fewer claimed than asked: an older message asked for may have been lost to another
    // worker's claim while its newer ones were claimed (see giveBackOvertaking).
    if (claimed.length > 0 && claimed.length < new Set(messageIds).size) {
      const givenBack = await giveBackOrRelease(claimed);
      if (givenBack.size > 0) claimed = claimed.filter((m) => !givenBack.has(m.id));
    }
    const outcomes = await sendClaimed(claimed, claimedAt);
    const recipients = new Map(claimed.map((m) => [m.id, m.recipient]));
    const unclaimed = messageIds.filter((id) => !outcomes.has(id));
    if (unclaimed.length > 0) {
      const rows = await db
        .selectFrom('outbound_messages')
        .select(['id', 'status', 'recipient', due('outbound_messages').as('due')])
        .where(anyOf('id', unclaimed, 'uuid'))
        .execute();
      const found = new Map(rows.map((row) => [row.id, row]));
      for (const id of unclaimed) {
        const row = found.get(id);
        // Sending elsewhere, or due but waiting behind an older message to the same person:
        // busy (its job tries again). Done, or waiting for its retry's own job: not pending.
        outcomes.set(id, row !== undefined && (row.status === 'sending' || (row.status === 'queued' && row.due)) ? 'busy' : 'not_pending');
        if (row !== undefined) recipients.set(id, row.recipient);
      }
    }
    return { outcomes, recipients };
  }

  /**
   * Sends messages this worker has claimed (at `claimedAt`, performance.now()): each
   * recipient's in the order they were written, different recipients at once. Answers each
   * message's outcome.
   */
  async function sendClaimed(claimed: readonly Claimed[], claimedAt: number, registered?: Set<string>): Promise<Map<string, DeliveryOutcome | Error>> {
    const outcomes = new Map<string, DeliveryOutcome | Error>();
    const byRecipient = new Map<string, Claimed[]>();
    const inOrder = [...claimed].sort((a, b) => (a.write_order < b.write_order ? -1 : a.write_order > b.write_order ? 1 : a.id < b.id ? -1 : 1));
    for (const message of inOrder) {
      const mine = byRecipient.get(message.recipient);
      if (mine === undefined) byRecipient.set(message.recipient, [message]);
      else mine.push(message);
    }
    await Promise.all(
      [...byRecipient.values()].map(async (messages) => {
        const recipient = messages[0]!.recipient;
        // Counted as being sent to already (dispatchWritten): this send takes that count over.
        if (registered?.delete(recipient) !== true) sendingStarts(recipient);
        try {
          await sendInOrder(messages);
        } finally {
          sendingEnds(recipient);
        }
      }),
    );
    return outcomes;

    /** One recipient's messages, one after another; stops at the first that is not done. */
    async function sendInOrder(messages: readonly Claimed[]): Promise<void> {
      for (const [index, message] of messages.entries()) {
        try {
          // Sends before this one may have taken long (timeouts, a fallback): a claim near
          // its timeout is renewed first, so no other worker can take it over mid-send.
          // A claim taken over is "not done" like any other: the other worker has not sent
          // it yet, so this person's later messages must not go ahead of it (below).
          const renewed = performance.now() - claimedAt < renewAfterMs || (await renewClaim(message));
          const outcome = renewed ? await deliverClaimed(message) : 'busy';
          outcomes.set(message.id, outcome);
          if (outcome === 'sent' || outcome === 'failed') continue;
        } catch (error) {
          // This message only (it stays claimed; its job retries it after the claim times out).
          logger.error({ message_id: message.id, error }, 'delivery failed unexpectedly');
          outcomes.set(message.id, error instanceof Error ? error : new Error(String(error)));
        }
        // Not done (a retry later, an SMS to come, taken over, an error): this person's
        // later messages wait for it. Their claims go back, and their jobs try again.
        const later = messages.slice(index + 1);
        if (later.length > 0) {
          // If the database refuses, the other people's sends in this call go on, and are answered, as usual.
          await releaseOrLog(later);
          for (const waiting of later) outcomes.set(waiting.id, 'busy');
        }
        return;
      }
    }
  }

  /** One claimed message: send it, or decide what its failure means. */
  async function deliverClaimed(message: Claimed): Promise<DeliveryOutcome> {
    const messageId = message.id;
    const parsed = OutboundPayload.safeParse(message.content);
    if (!parsed.success) return failUnreadable(message, parsed.error);
    const payload = parsed.data;
    let attempt = message.attempts + 1;
    const route = chooseRoute({
      kind: message.kind as OutboundKind,
      channel: message.channel,
      lastInboundAt: message.recipient_last_inbound_at ?? null,
      now: now(),
      templates: deps.config.whatsapp.templates,
      hasTemplateParameters: payload.template !== undefined,
    });

    // Shutdown has begun: no send starts here any more (one cut off by the kill timeout may go twice).
    if (sendsClosed) return putBack(message);
    if (route.channel === 'whatsapp') {
      // Its turn in the send pace: waited for if near, otherwise put back for later.
      const turn = pace.take(paceMaxWaitMs);
      if (turn === false) return putBack(message);
      if (turn !== true) {
        metrics.whatsappPaced.inc({ outcome: 'waited' });
        const waitedFrom = performance.now();
        // Shutdown closes the pace, and a slow-down puts back who would wait too long: such a send is put back instead of started.
        if (!(await turn)) return putBack(message);
        // The claim's arithmetic counts PACE_MAX_WAIT_MS for this wait: should a late timer have
        // stretched it, the claim is renewed first (and the message left alone if it was taken over).
        if (performance.now() - waitedFrom > paceMaxWaitMs + 1_000) {
          if (!(await renewClaim(message))) return 'busy';
          if (sendsClosed) return putBack(message);
        }
      }
      try {
        const { wamid } =
          route.mode === 'freeform'
            ? await deps.whatsapp.send(message.recipient, payload.message)
            : await deps.whatsapp.sendTemplate(message.recipient, {
                name: route.templateName,
                language: deps.config.whatsapp.templateLanguage,
                parameters: payload.template?.parameters ?? [],
                ...(payload.template?.buttonPayload === undefined ? {} : { buttonPayload: payload.template.buttonPayload }),
              });
        if (wamid === null) logger.warn({ message_id: messageId }, 'whatsapp accepted the message but did not name it: its status reports cannot be matched');
        await sent.add({ id: messageId, channel: 'whatsapp', wamid, sms_id: null, attempts: attempt, stamp: message.updated_at, kind: message.kind });
        metrics.messagesSent.inc({ channel: 'whatsapp', outcome: route.mode === 'template' ? 'sent_template' : 'sent' });
        return 'sent';
      } catch (error) {
        if (!isDeliveryError(error)) throw error;
        // Meta says too fast (several machines at the full rate, a lower tier): this process slows down for a while.
        // (130429 only: a 429 may also be a limit on one recipient, 131056, which a slower pace does not help.)
        if (error instanceof ProviderError && error.code === '130429' && pace.slowDown()) {
          metrics.whatsappPaced.inc({ outcome: 'slowed_down' });
          logger.warn({ per_second: pace.rate() }, 'whatsapp answered too fast (130429): sending slower for a minute');
        }
        logger.warn({ message_id: messageId, attempt, error: describeDeliveryError(error) }, 'whatsapp send failed');
        metrics.messagesSent.inc({ channel: 'whatsapp', outcome: error.retryable ? 'error_retryable' : 'error_final' });
        const decision = afterWhatsAppFailure(
          { retryable: error.retryable, code: 'code' in error ? error.code : undefined, retryAfterSeconds: 'retryAfterSeconds' in error ? error.retryAfterSeconds : undefined },
          attempt,
          deps.config.delivery.maxAttempts,
          random(),
        );
        const outcome = await recordFailure(message, 'whatsapp', error, decision);
        // A fallback goes out at once; the job scheduled with it is the safety net.
        if (outcome !== 'fell_back') return outcome;
        // Another worker may win the claim on the SMS send; either way the message fell back.
        return (await deliver(messageId)) === 'failed' ? 'failed' : 'fell_back';
      }
    }

    if (message.channel !== 'sms') {
      // Routed to SMS without a WhatsApp attempt now (outside the window, no template): record
      // why, once. Earlier WhatsApp tries (the window closed since) do not count against SMS:
      // DELIVERY_MAX_ATTEMPTS is tries per channel, as after fallBackToSms, so tries restart.
      // Only under our claim (same stamp, left unchanged): a worker that took it over decides.
      const switched = await db
        .updateTable('outbound_messages')
        .set({ channel: 'sms', attempts: 0, fallback_reason: route.reason, fell_back_at: sql`now()` })
        .where('id', '=', messageId)
        .where('fell_back_at', 'is', null)
        .where('status', '=', 'sending')
        .where('updated_at', '=', message.updated_at)
        .returning('id')
        .executeTakeFirst();
      if (switched !== undefined) attempt = 1;
      metrics.fallbacks.inc({ reason: route.reason });
    }
    try {
      const { messageId: smsId } = await deps.sms.send(message.recipient, smsText(payload));
      await sent.add({ id: messageId, channel: 'sms', wamid: null, sms_id: smsId, attempts: attempt, stamp: message.updated_at, kind: message.kind });
      metrics.messagesSent.inc({ channel: 'sms', outcome: 'sent' });
      return 'sent';
    } catch (error) {
      if (!isDeliveryError(error)) throw error;
      const facts = { retryable: error.retryable, code: 'code' in error ? error.code : undefined, retryAfterSeconds: undefined, httpStatus: 'httpStatus' in error ? error.httpStatus : undefined };
      if (isSmsAccountProblem(facts)) {
        logger.error({ message_id: messageId, attempt, error: describeDeliveryError(error) }, "sms refused for the account (Africa's Talking balance, sender id, risk hold or API key): every SMS fails until a person fixes it");
      } else {
        logger.warn({ message_id: messageId, attempt, error: describeDeliveryError(error) }, 'sms send failed');
      }
      const decision = afterSmsFailure(
        facts,
        attempt,
        deps.config.delivery.maxAttempts,
        random(),
      );
      return recordFailure(message, 'sms', error, decision);
    }
  }

  async function enqueue(trx: Transaction<Database>, drafts: readonly OutboundDraft[], alongside?: RawBuilder<unknown>): Promise<string[]> {
    if (drafts.length === 0) {
      await alongside?.execute(trx);
      return [];
    }
    return [...(await write(trx, drafts, { alongside: alongside === undefined ? [] : [{ name: 'caller', write: alongside }], claim: false })).ids];
  }

  async function enqueueClaimed(trx: Transaction<Database>, drafts: readonly OutboundDraft[], alongside: readonly AlongsideWrite[] = []): Promise<Written> {
    if (drafts.length > 0) return write(trx, drafts, { alongside, claim: true });
    if (alongside.length === 0) return NOTHING_WRITTEN;
    // No rows to write: the caller's writes alone, still one statement.
    const counts = countColumns(alongside);
    const { rows } = await sql<Record<string, number>>`with ${sql.join(alongside.map(withQuery))} select ${counts.length === 0 ? sql`1 as none` : sql.join(counts)}`.execute(trx);
    return { ...NOTHING_WRITTEN, counts: readCounts(alongside, rows[0]) };
  }

  /** The WITH query's name for a caller's write alongside (AlongsideWrite), its name checked. */
  function withName(name: string): string {
    if (!/^[a-z][a-z_]{0,40}$/.test(name)) throw new Error(`alongside write: the name ${JSON.stringify(name)} is not allowed`);
    return `alongside_${name}`;
  }

  /** `alongside_<name> as (write)`, for a caller's write alongside. */
  function withQuery({ name, write }: AlongsideWrite): RawBuilder<unknown> {
    return sql`${sql.raw(withName(name))} as (${write})`;
  }

  /** A column per counted write: its row count (none when no write is counted). */
  function countColumns(alongside: readonly AlongsideWrite[]): RawBuilder<unknown>[] {
    return alongside.filter((a) => a.counted === true).map(({ name }) => sql`(select count(*) from ${sql.raw(withName(name))})::int as ${sql.raw(`count_${name}`)}`);
  }

  function readCounts(alongside: readonly AlongsideWrite[], row: Record<string, unknown> | undefined): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const { name, counted } of alongside) if (counted === true) counts[name] = Number(row?.[`count_${name}`]);
    return counts;
  }

  /**
   * Writes the rows, their jobs and the caller's write in one statement, however many drafts;
   * the rows as one parameter (a VALUES list of hundreds costs more to plan than to run). With
   * `claim`, a row goes in claimed by this process (sending, all stamped alike) unless an older
   * message to the same person is unsent; claim's own rule, judged at the insert.
   */
  async function write(trx: Transaction<Database>, drafts: readonly OutboundDraft[], options: { alongside: readonly AlongsideWrite[]; claim: boolean }): Promise<Written> {
    const rows = drafts.map((draft, index) => ({
      id: randomUUID(),
      recipient: draft.recipient,
      kind: draft.kind,
      content: OutboundPayload.parse(draft.payload),
      invoice_id: draft.invoiceId ?? null,
      ord: index,
    }));
    // The safety net: one job for the write's messages (a few for a large write), waiting a
    // little so that the eager path normally finishes first.
    const jobs: Array<{ data: z.infer<typeof DeliverWriteJobData>; startAfterSeconds: number }> = [];
    for (let at = 0; at < rows.length; at += IDS_PER_JOB) {
      jobs.push({ data: { messageIds: rows.slice(at, at + IDS_PER_JOB).map((row) => row.id) }, startAfterSeconds: deps.config.delivery.safetyNetSeconds });
    }
    // The jobs go in with the rows (and the caller's write): one statement, one round trip.
    const withJobs = deps.jobs.insertStatement(writeJob, jobs);
    const before = [
      options.alongside.map(withQuery),
      withJobs === undefined ? [] : [sql`jobs as (${withJobs})`],
      // One stamp for the whole claim (release and recordSent recognise the claim by it), to the
      // millisecond as a JS Date holds it, from the clock: the claim times out from the insert.
      options.claim ? [sql`stamp as (select date_trunc('milliseconds', clock_timestamp()) as at)`] : [],
    ].flat();
    const counts = countColumns(options.alongside);
    const claimedAt = performance.now();
    // Rows written together keep their order: now() is the same for the whole transaction and
    // a coarse clock (the embedded database's) can give one statement's rows equal
    // clock_timestamp()s, so each row is also a microsecond after the one before.
    const { rows: inserted } = await sql<{ id: string; status: string; updated_at: Date; recipient_last_inbound_at: Date | null; write_order: string }>`
      ${before.length === 0 ? sql`` : sql`with ${sql.join(before)}`}
      insert into outbound_messages (id, recipient, kind, content, invoice_id, created_at${options.claim ? sql`, status, updated_at` : sql``})
      select v.id, v.recipient, v.kind, v.content, v.invoice_id, clock_timestamp() + make_interval(secs => v.ord / 1000000.0)${
        options.claim
          ? sql`,
        case when older.unsent then 'queued' else 'sending' end,
        (select at from stamp)`
          : sql``
      }
      from ${rowsOf('v', rows, { id: 'uuid', recipient: 'text', kind: 'text', content: 'jsonb', invoice_id: 'uuid', ord: 'integer' })}${
        options.claim
          ? // Each person's unsent messages looked up through their index, row by row (a lateral
            // with a limit is never hashed): as an EXISTS, the planner hashed every unsent row
            // of the table instead, reading the whole partial index and every entry a message
            // sent since the last vacuum left in it (9,571 entries for 44 live rows, a write of
            // 212 messages, bench/callbacks.ts at 256 clients).
            sql`
      left join lateral (
        select true as unsent from outbound_messages older
        where older.recipient = v.recipient and older.status in ('queued', 'sending')
        limit 1
      ) older on true`
          : sql``
      }
      order by v.ord${
        options.claim
          ? sql`
      returning outbound_messages.id, outbound_messages.status, outbound_messages.updated_at,
        (select c.last_inbound_at from conversations c where c.phone = outbound_messages.recipient) as recipient_last_inbound_at,
        to_char(outbound_messages.created_at at time zone 'UTC', 'YYYYMMDDHH24MISSUS') as write_order${counts.length === 0 ? sql`` : sql`, ${sql.join(counts)}`}`
          : counts.length === 0
            ? sql``
            : sql`
      returning ${sql.join(counts)}`
      }`.execute(trx);
    // Every row carries the counts (drafts is not empty: there is a first row).
    const counted = readCounts(options.alongside, inserted[0] as Record<string, unknown> | undefined);
    // A queue this process did not create: one at a time, so a missing queue is an error.
    if (withJobs === undefined) await deps.jobs.enqueueMany(trx, writeJob, jobs);
    const ids: string[] = rows.map((row) => row.id);
    if (!options.claim) return { ids, claimed: [], claimedAt, queued: [], counts: counted };
    // The content is the one just written, not read back (as stored: storable, as jsonb wrote it).
    const byId = new Map<string, (typeof rows)[number]>(rows.map((row) => [row.id, row]));
    const claimed = inserted
      .filter((row) => row.status === 'sending')
      .map((row): Claimed => {
        const own = byId.get(row.id)!;
        return {
          id: row.id,
          recipient: own.recipient,
          kind: own.kind,
          content: storable(own.content),
          channel: null,
          attempts: 0,
          updated_at: row.updated_at,
          recipient_last_inbound_at: row.recipient_last_inbound_at,
          write_order: row.write_order,
        };
      });
    const queued = inserted.filter((row) => row.status === 'queued').map((row) => ({ id: row.id, recipient: byId.get(row.id)!.recipient }));
    return { ids, claimed, claimedAt, queued, counts: counted };
  }

  function dispatchSoon(messageIds: readonly string[]): void {
    if (messageIds.length === 0) return;
    const first = dispatchQueue.length === 0;
    dispatchQueue.push(...messageIds);
    if (!first) return;
    // Deferred one turn of the event loop (the caller answers its request first); every
    // request answered in that turn is delivered together (deliverMany keeps each
    // recipient's messages in the order they were written).
    dispatch(() => deliverManyTo(dispatchQueue.splice(0)), 0, new Promise<void>((resolve) => setImmediate(resolve)));
  }

  async function idle(): Promise<void> {
    // Messages waiting for a send to their person (perhaps a job's, not tracked here) count:
    // they are dispatched when it ends.
    while (inFlight.size > 0 || waitingFor.size > 0) {
      if (inFlight.size > 0) await Promise.allSettled([...inFlight]);
      else await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /** Writes whose claims have been handed to a dispatch: a claim held in memory is used once. */
  const dispatchedWrites = new WeakSet<Written>();

  function dispatchWritten(written: Written): void {
    if (dispatchedWrites.has(written)) {
      // Again: its claims are spent; the ids go the way of any other (claimed first, in the database).
      dispatchSoon(written.ids);
      return;
    }
    dispatchedWrites.add(written);
    if (written.claimed.length > 0) {
      // Their recipients count as being sent to from now on, not only once the deferred send
      // starts: a message queued behind one of them meanwhile waits for it (below).
      const registered = new Set(written.claimed.map((m) => m.recipient));
      registered.forEach(sendingStarts);
      // Deferred like dispatchSoon: the caller answers its request first.
      dispatch(
        async () => {
          try {
            // The insert judged "nothing older unsent" on its own snapshot: an older message to the
            // same person written by a transaction that had not committed then, and has since, was
            // not seen. Those claimed rows go back and wait for it (one statement; the old path's
            // claim after commit saw it). Any committed later than this is later in commit order too.
            const givenBack = await giveBackOrRelease(written.claimed, true);
            const outcomes = await sendClaimed(
              written.claimed.filter((m) => !givenBack.has(m.id)),
              written.claimedAt,
              registered,
            );
            for (const id of givenBack) outcomes.set(id, 'busy');
            return { outcomes, recipients: new Map(written.claimed.map((m) => [m.id, m.recipient])) };
          } finally {
            // Those whose send never started (given back, or the statement failed).
            registered.forEach(sendingEnds);
          }
        },
        0,
        new Promise<void>((resolve) => setImmediate(resolve)),
      );
    }
    // The rest were written queued (every row is one or the other). Behind a message this
    // process is sending: they go when it has gone.
    dispatchSoon(written.queued.filter(({ id, recipient }) => !waitIfSending(recipient, id)).map(({ id }) => id));
  }

  /**
   * Shutdown's first step: no send starts any more. WhatsApp sends waiting for their turn in the
   * pace, and every message claimed from now on (a job's, an eager dispatch's; WhatsApp or SMS),
   * are put back (queued, no try counted) instead of started: shutdown has seconds, and a send
   * cut off mid-call may go twice. Their jobs send them, here after a restart or elsewhere.
   * Sends already in flight finish, and are recorded as usual.
   */
  function beginStop(): void {
    sendsClosed = true;
    pace.close();
  }

  return {
    job,
    writeJob,
    enqueue,
    enqueueClaimed,
    async fallBackToSms(trx, messageId, reason) {
      const { fellBack, notices } = await fallBackToSms(trx, messageId, reason);
      return fellBack ? [messageId] : notices;
    },
    sweep,
    sweepJob: scheduledJob('outbox-sweep', () => sweep()),
    deliver,
    deliverMany,
    dispatchSoon,
    dispatchWritten,
    idle,
    beginStop,
    async stop() {
      beginStop();
      stopping = true;
      await idle();
    },
  };
}
