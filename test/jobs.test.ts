import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import { z } from 'zod';
import type { JobDefinition } from '../src/jobs/queue.js';
import { buildTestApp, type TestApp } from './helpers/app.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';

const ran: string[] = [];
const markerJob: JobDefinition<z.ZodObject<{ marker: z.ZodString }>> = {
  name: 'test-marker',
  schema: z.object({ marker: z.string() }),
  retryLimit: 0,
  async handle(data) {
    ran.push(data.marker);
  },
};

let database: TestDatabase;
let t: TestApp;

before(async () => {
  database = await createTestDatabase();
  t = buildTestApp(database, { jobs: [markerJob] });
  await t.deps.jobs.start(t.deps.jobDefinitions);
});

after(async () => {
  await t.deps.jobs.stop(2_000);
  await database.dispose();
});

async function waitFor(predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('condition not met in time');
}

test('a job enqueued in a committed transaction runs', async () => {
  const id = await database.handle.db.transaction().execute((trx) => t.deps.jobs.enqueue(trx, markerJob, { marker: 'committed' }));
  assert.ok(id);
  await waitFor(() => ran.includes('committed'));
  await waitFor(async () => (await t.deps.jobs.boss.getJobById(markerJob.name, id))?.state === 'completed');
});

test('a job enqueued in a rolled-back transaction never exists and never runs', async () => {
  let id: string | null = null;
  await assert.rejects(
    database.handle.db.transaction().execute(async (trx) => {
      id = await t.deps.jobs.enqueue(trx, markerJob, { marker: 'rolled-back' });
      throw new Error('business rule failed');
    }),
    /business rule failed/,
  );
  assert.ok(id, 'the job was written inside the transaction');
  assert.equal(await t.deps.jobs.boss.getJobById(markerJob.name, id), null);
  // Give the worker several polling rounds to (wrongly) find it, with a committed job as a fence.
  await database.handle.db.transaction().execute((trx) => t.deps.jobs.enqueue(trx, markerJob, { marker: 'fence' }));
  await waitFor(() => ran.includes('fence'));
  await new Promise((resolve) => setTimeout(resolve, 1_200));
  assert.ok(!ran.includes('rolled-back'));
});

test('job data that does not match the schema is refused at enqueue', async () => {
  await assert.rejects(
    database.handle.db.transaction().execute((trx) => t.deps.jobs.enqueue(trx, markerJob, { marker: 42 } as unknown as { marker: string })),
  );
});

test("the insert statement run inside another statement writes the jobs PgBoss#insert writes, and they run", async () => {
  const columns = `name, data, priority, state, retry_limit, retry_delay, retry_backoff, expire_in, policy, dead_letter, singleton_key, singleton_on,
    round(extract(epoch from start_after - created_on)) as waits, round(extract(epoch from keep_until - start_after) / 3600) as kept_hours`;
  const read = async (marker: string) => (await database.handle.pool.query(`select ${columns} from pgboss.job where name = $1 and data->>'marker' = $2`, [markerJob.name, marker])).rows;
  // pg-boss's own insert, as enqueueMany used to call it.
  await t.deps.jobs.boss.insert([{ name: markerJob.name, data: { marker: 'by-boss' }, startAfter: '3600 seconds' }]);
  // The statement, as the outbox runs it: a data-modifying WITH of another statement.
  const statement = t.deps.jobs.insertStatement(markerJob, [{ data: { marker: 'by-statement' }, startAfterSeconds: 3600 }, { data: { marker: 'now' } }]);
  assert.ok(statement !== undefined);
  await database.handle.db.transaction().execute(async (trx) => {
    await sql`with jobs as (${statement}) select 1`.execute(trx);
  });
  const [byBoss] = await read('by-boss');
  const [byStatement] = await read('by-statement');
  assert.ok(byBoss !== undefined && byStatement !== undefined);
  assert.deepEqual({ ...byStatement, data: null }, { ...byBoss, data: null });
  assert.equal(byStatement.waits, '3600');
  await waitFor(() => ran.includes('now'));
  // A queue this process never created: no statement (enqueueMany makes that an error).
  assert.equal(t.deps.jobs.insertStatement({ ...markerJob, name: 'never-created' }, [{ data: { marker: 'x' } }]), undefined);
});

test('a job still running when the queue stops, whose end reaches a closed database, crashes nothing; the job is failed and runs again', async () => {
  const own = await createTestDatabase();
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  let started = 0;
  const slowJob: JobDefinition<z.ZodObject<{ n: z.ZodNumber }>> = {
    name: 'test-slow',
    schema: z.object({ n: z.number() }),
    retryLimit: 3,
    retryDelaySeconds: 1,
    async handle() {
      started += 1;
      await released;
      // The work's own write, after the database has gone: it fails, and so does failing the job.
      await sql`select 1`.execute(own.handle.db);
    },
  };
  const app = buildTestApp(own, { jobs: [slowJob] });
  await app.deps.jobs.start(app.deps.jobDefinitions);
  const id = await own.handle.db.transaction().execute((trx) => app.deps.jobs.enqueue(trx, slowJob, { n: 1 }));
  assert.ok(id);
  await waitFor(() => started === 1);

  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  try {
    // The shutdown deadline passes with the job still running: pg-boss fails it (so it runs again).
    await app.deps.jobs.stop(1_000);
    const state = (await own.handle.pool.query<{ state: string }>('select state from pgboss.job where id = $1', [id])).rows[0]?.state;
    assert.equal(state, 'retry');
    await own.dispose();
    release();
    // Its end (and pg-boss's completion of it) now meets a closed pool: logged, and nothing
    // left unhandled (given a moment more once the line is there).
    await waitFor(() => app.logs.lines.some((line) => line.message.includes('after the job queue stopped')));
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(unhandled.map(String), []);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});
