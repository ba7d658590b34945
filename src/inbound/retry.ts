/**
 * The retry of an inbound event kept after a failure (status retrying): its job, its backoff,
 * and what a failed try leaves. Shared by the WhatsApp/SMS inbound path and kept M-PESA
 * callbacks (src/payments/service.ts), which apply their events differently but count, wait
 * and park them alike.
 */
import { sql, type Transaction } from 'kysely';
import { z } from 'zod';
import type { Database } from '../db/schema.js';
import { backoffSeconds } from '../domain/delivery.js';
import type { JobDefinition, JobQueue } from '../jobs/queue.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';

export const RetryJobData = z.object({ eventId: z.uuid() });
export type RetryJob = JobDefinition<typeof RetryJobData>;

/** The job that tries a kept event again (`retry` decides and records the outcome). */
export function retryJob(name: string, retry: (eventId: string) => Promise<unknown>): RetryJob {
  return {
    name,
    schema: RetryJobData,
    retryLimit: 10,
    retryDelaySeconds: 5,
    async handle({ eventId }) {
      await retry(eventId);
    },
  };
}

export type RetryDeps = { jobs: Pick<JobQueue, 'enqueue'>; metrics: Metrics; logger: Logger; maxAttempts: number; random: () => number };

/** Queues the try after `attempts` tries: 1-2 s after the first, doubling up to 10 minutes. */
export async function scheduleRetry(deps: RetryDeps, trx: Transaction<Database>, job: RetryJob, eventId: string, attempts: number): Promise<void> {
  await deps.jobs.enqueue(trx, job, { eventId }, { startAfterSeconds: Math.ceil(backoffSeconds(attempts, deps.random(), 2, 600)) });
}

/**
 * After a failed try of a kept event: the try is counted and its error kept; past
 * `maxAttempts` tries (or at once with `parkNow`: no try can help) it is parked as dead, with
 * a metric and an error log, otherwise the next try is queued. Not retrying any more (done or
 * parked meanwhile): nothing changes.
 */
export async function afterFailedTry(
  deps: RetryDeps,
  trx: Transaction<Database>,
  job: RetryJob,
  eventId: string,
  error: string,
  options: { parkNow?: boolean } = {},
): Promise<'retrying' | 'dead' | 'not_pending'> {
  const event = await trx
    .updateTable('inbound_events')
    .set({ attempts: sql`attempts + 1`, last_error: error, updated_at: sql`now()` })
    .where('id', '=', eventId)
    .where('status', '=', 'retrying')
    .returning(['attempts', 'source'])
    .executeTakeFirst();
  if (event === undefined) return 'not_pending';
  if (options.parkNow === true || event.attempts >= deps.maxAttempts) {
    await trx.updateTable('inbound_events').set({ status: 'dead' }).where('id', '=', eventId).execute();
    deps.metrics.inboundEvents.inc({ source: event.source, outcome: 'dead' });
    deps.logger.error({ event_id: eventId, source: event.source, attempts: event.attempts, error }, 'inbound event parked as dead');
    return 'dead';
  }
  await scheduleRetry(deps, trx, job, eventId, event.attempts);
  return 'retrying';
}
