/**
 * The job queue: pg-boss 10 on the application's own pool (so it works on the embedded
 * single-connection database too) and an `enqueue` that writes the job inside the caller's
 * Kysely transaction: a true outbox. If the business transaction rolls back, the job was
 * never there.
 */
import { CompiledQuery, sql, type RawBuilder, type Transaction } from 'kysely';
import PgBoss from 'pg-boss';
import { insertJobs } from 'pg-boss/src/plans.js';
import type pg from 'pg';
import { z } from 'zod';
import type { Database } from '../db/schema.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';

/** A job kind: its queue name, the zod schema of its data, and what running it does. */
export type JobDefinition<S extends z.ZodType = z.ZodType> = {
  readonly name: string;
  readonly schema: S;
  readonly retryLimit?: number;
  readonly retryDelaySeconds?: number;
  readonly retryBackoff?: boolean;
  /** Jobs fetched per poll and run concurrently (one fetch and one completion per batch). */
  readonly batchSize?: number;
  handle(data: z.infer<S>, context: { logger: Logger; jobId: string; retryCount: number }): Promise<void>;
  /**
   * Optional: a whole fetched batch at once (one statement for many jobs). Answers, per item
   * and in order, the error that fails that job, or undefined when it is done.
   */
  handleBatch?(items: ReadonlyArray<{ data: z.infer<S>; jobId: string; retryCount: number }>): Promise<ReadonlyArray<Error | undefined>>;
};

/** The data of a job that carries none (the scheduled sweeps and folds). */
export const NoJobData = z.object({}).loose();
export type NoJobData = typeof NoJobData;

/**
 * A scheduled job that carries no data and is not retried (its next scheduled run is the
 * retry): runs `run` with the job's context.
 */
export function scheduledJob(name: string, run: (context: { logger: Logger }) => Promise<unknown>): JobDefinition<NoJobData> {
  return {
    name,
    schema: NoJobData,
    retryLimit: 0,
    async handle(_data, context) {
      await run(context);
    },
  };
}

export type EnqueueOptions = {
  /** Run no earlier than this many seconds from now. */
  startAfterSeconds?: number;
  /** A key that makes a second enqueue of the same work a no-op while the first is queued. */
  singletonKey?: string;
};

export type JobQueue = {
  readonly boss: PgBoss;
  /** Starts pg-boss and a worker for each job definition. */
  start(jobs: readonly JobDefinition[]): Promise<void>;
  /** Resolves once start() has created every queue: enqueueing works from then on. */
  readonly ready: Promise<void>;
  stop(timeoutMs: number): Promise<void>;
  /** Enqueues inside `trx`: the job exists only if the transaction commits. */
  enqueue<S extends z.ZodType>(trx: Transaction<Database>, job: JobDefinition<S>, data: z.infer<S>, options?: EnqueueOptions): Promise<string | null>;
  /** Enqueues several jobs of one kind inside `trx` in one statement (no singleton keys). */
  enqueueMany<S extends z.ZodType>(trx: Transaction<Database>, job: JobDefinition<S>, items: ReadonlyArray<JobItem<S>>): Promise<void>;
  /**
   * The statement enqueueMany would run, for a caller that runs it inside one of its own (a
   * data-modifying WITH) and saves a round trip. Undefined when this process has not created
   * the queue: then call enqueueMany, which makes a missing queue an error instead of lost work.
   */
  insertStatement<S extends z.ZodType>(job: JobDefinition<S>, items: ReadonlyArray<JobItem<S>>): RawBuilder<unknown> | undefined;
};

export type JobItem<S extends z.ZodType> = { data: z.infer<S>; startAfterSeconds?: number };

/** pg-boss's bulk insert (the statement PgBoss#insert runs), its parameters bound by Kysely. */
const INSERT_JOBS = insertJobs('pgboss');

/**
 * The jobs as PgBoss#insert receives them, and its statement with the same parameters: the
 * jobs' JSON, then the instance defaults (expiry, retention, retries) this service leaves
 * unset (null), so each queue's own settings apply.
 */
function insertJobsStatement(name: string, jobs: ReadonlyArray<{ data: unknown; startAfterSeconds?: number }>): RawBuilder<unknown> {
  const rows = jobs.map((item) => ({
    name,
    data: item.data,
    ...(item.startAfterSeconds === undefined ? {} : { startAfter: `${Math.max(0, Math.ceil(item.startAfterSeconds))} seconds` }),
  }));
  const values: unknown[] = [JSON.stringify(rows), null, null, null, null, null];
  const parts = INSERT_JOBS.split(/\$([1-6])(?!\d)/);
  return sql.join(
    parts.map((part, index) => (index % 2 === 0 ? sql.raw(part) : sql`${values[Number(part) - 1]}`)),
    sql``,
  );
}

/** pg-boss's database adapter over a Kysely transaction. */
function transactionAdapter(trx: Transaction<Database>): PgBoss.Db {
  return {
    async executeSql(text: string, values: unknown[]) {
      const result = await trx.executeQuery(CompiledQuery.raw(text, values));
      return { rows: [...result.rows] };
    },
  };
}

/**
 * pg-boss's database adapter over the pool. Once the queue has stopped, a job that outlived
 * the shutdown deadline (pg-boss has already failed it, so it runs again) may still end, and
 * its completion, which pg-boss does not await, would meet a closed pool as an unhandled
 * rejection and crash the process. So after stop a failed write is logged and answered as
 * what it was: a command that changed no job (pg-boss reads only that count from
 * completions and failures, the only writes it makes once stopped).
 */
function poolAdapter(pool: pg.Pool, stopped: () => boolean, logger: Logger): PgBoss.Db {
  return {
    async executeSql(text: string, values: unknown[]) {
      try {
        const result = await pool.query(text, values);
        return { rows: result.rows };
      } catch (error) {
        if (!stopped()) throw error;
        logger.warn({ error: error instanceof Error ? error.message : String(error) }, 'a job ended after the job queue stopped; its outcome is not recorded (pg-boss failed it at shutdown, so it runs again)');
        return { rows: [{ count: '0' }] };
      }
    },
  };
}

export type JobQueueSettings = {
  pool: pg.Pool;
  logger: Logger;
  metrics: Metrics;
  /** Seconds between polls for new work (pg-boss minimum 0.5). */
  pollingIntervalSeconds?: number;
  /** Run maintenance and cron (one instance at a time takes the lead in pg-boss). */
  supervise?: boolean;
};

export function createJobQueue(settings: JobQueueSettings): JobQueue {
  const { logger, metrics } = settings;
  let stopped = false;
  /** Job batches whose handlers are running now. */
  const running = new Set<Promise<unknown>>();
  const boss = new PgBoss({
    db: poolAdapter(settings.pool, () => stopped, logger),
    supervise: settings.supervise ?? true,
    schedule: settings.supervise ?? true,
  });
  boss.on('error', (error: Error) => logger.error({ error }, 'job queue error'));

  /** Queues this process created (or confirmed) in start(): pg-boss's bulk insert drops rows for unknown queues silently. */
  const created = new Set<string>();
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => {
    markReady = resolve;
  });

  return {
    boss,
    ready,
    async start(jobs) {
      await boss.start();
      for (const job of jobs) {
        await boss.createQueue(job.name, {
          name: job.name,
          retryLimit: job.retryLimit ?? 5,
          retryDelay: job.retryDelaySeconds ?? 5,
          retryBackoff: job.retryBackoff ?? true,
        });
        created.add(job.name);
        /** The job's data; undefined for data that does not match its schema (retrying cannot fix it: counted, logged, dropped). */
        const parse = (raw: PgBoss.JobWithMetadata<unknown>): { data: unknown; jobId: string; retryCount: number } | undefined => {
          const parsed = job.schema.safeParse(raw.data);
          if (parsed.success) return { data: parsed.data, jobId: raw.id, retryCount: raw.retryCount };
          metrics.jobsProcessed.inc({ queue: job.name, outcome: 'invalid' });
          logger.error({ job: job.name, job_id: raw.id, issues: parsed.error.issues.length }, 'job data does not match its schema; dropped');
          return undefined;
        };
        /** Counts the outcome; a failure fails this job alone (pg-boss completes the rest of the batch when the handler returns). */
        const finish = async (jobId: string, error: unknown): Promise<void> => {
          metrics.jobsProcessed.inc({ queue: job.name, outcome: error === undefined ? 'completed' : 'failed' });
          if (error === undefined) return;
          logger.warn({ job: job.name, job_id: jobId, error }, 'job failed; pg-boss retries it with backoff');
          await boss.fail(job.name, jobId, { message: error instanceof Error ? error.message : String(error) });
        };
        const run = async (raw: PgBoss.JobWithMetadata<unknown>): Promise<void> => {
          const item = parse(raw);
          if (item === undefined) return;
          let failure: unknown;
          try {
            await job.handle(item.data, { logger: logger.child({ job: job.name, job_id: raw.id }), jobId: raw.id, retryCount: raw.retryCount });
          } catch (error) {
            failure = error ?? new Error('job failed');
          }
          await finish(raw.id, failure);
        };
        await boss.work(
          job.name,
          { batchSize: job.batchSize ?? 1, includeMetadata: true, pollingIntervalSeconds: settings.pollingIntervalSeconds ?? 1 },
          (batch) => {
            const work = (async () => {
              if (job.handleBatch === undefined) {
                await Promise.all(batch.map(run));
                return;
              }
              const valid = batch.map(parse).filter((item) => item !== undefined);
              if (valid.length === 0) return;
              // An error thrown here fails the whole batch; pg-boss retries each job with backoff.
              const errors = await job.handleBatch(valid);
              for (const [index, item] of valid.entries()) await finish(item.jobId, errors[index]);
            })();
            const tracked = work.finally(() => running.delete(tracked)).catch(() => undefined);
            running.add(tracked);
            return work;
          },
        );
      }
      markReady();
    },
    async stop(timeoutMs) {
      const deadline = performance.now() + timeoutMs;
      await boss.stop({ graceful: true, wait: true, close: false, timeout: timeoutMs });
      // pg-boss looks every half second: wait for the last handlers until the deadline itself.
      const left = Math.max(0, deadline - performance.now());
      if (running.size > 0 && left > 0) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([Promise.allSettled([...running]), new Promise((resolve) => (timer = setTimeout(resolve, left)))]);
        clearTimeout(timer);
      }
      stopped = true;
      if (running.size > 0) {
        logger.warn({ batches: running.size }, 'jobs still running at the shutdown deadline: pg-boss failed them and they run again (a message one of them was sending may go twice)');
      }
    },
    async enqueue(trx, job, data, options = {}) {
      const sendOptions: PgBoss.SendOptions = { db: transactionAdapter(trx) };
      if (options.startAfterSeconds !== undefined) sendOptions.startAfter = options.startAfterSeconds;
      if (options.singletonKey !== undefined) sendOptions.singletonKey = options.singletonKey;
      const id = await boss.send(job.name, job.schema.parse(data) as object, sendOptions);
      // pg-boss answers null, silently, for a queue that was never created: never lose work that way.
      if (id === null && options.singletonKey === undefined) throw new Error(`job queue ${job.name} does not exist; was the queue started?`);
      return id;
    },
    async enqueueMany(trx, job, items) {
      if (items.length === 0) return;
      if (!created.has(job.name)) {
        // Unknown here: one at a time, so a missing queue is an error rather than lost work.
        for (const item of items) await this.enqueue(trx, job, item.data, item.startAfterSeconds === undefined ? {} : { startAfterSeconds: item.startAfterSeconds });
        return;
      }
      await insertJobsStatement(job.name, items.map((item) => ({ ...item, data: job.schema.parse(item.data) }))).execute(trx);
    },
    insertStatement(job, items) {
      if (items.length === 0 || !created.has(job.name)) return undefined;
      return insertJobsStatement(job.name, items.map((item) => ({ ...item, data: job.schema.parse(item.data) })));
    },
  };
}
