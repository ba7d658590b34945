import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import { DataDirLockedError, openDatabase, type DatabaseHandle } from '../src/db/connect.js';
import { createTestDatabase, testDatabaseUrl, type TestDatabase } from './helpers/database.js';
import { runNode } from './helpers/process.js';

const fixture = fileURLToPath(new URL('./fixtures/open-embedded.ts', import.meta.url));

let database: TestDatabase;
const tempDirs: string[] = [];

before(async () => {
  database = await createTestDatabase();
});

after(async () => {
  await database.dispose();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function tempDataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'invoiceiq-db-test-'));
  tempDirs.push(dir);
  return dir;
}

/** A pid that certainly belonged to a process which has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  const pid = child.pid;
  assert.ok(pid);
  await new Promise<void>((resolve) => child.on('exit', () => resolve()));
  assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
  return pid;
}

async function createNotes(handle: DatabaseHandle): Promise<void> {
  await sql`create table if not exists notes (id serial primary key, body text not null)`.execute(handle.db);
}

async function noteBodies(handle: DatabaseHandle): Promise<string[]> {
  const result = await sql<{ body: string }>`select body from notes order by id`.execute(handle.db);
  return result.rows.map((row) => row.body);
}

test('int8 comes back as a string, never a lossy number', async () => {
  const db = database.handle.db;
  const big = await sql<{ n: unknown; small: unknown; sum: unknown }>`
    select 9007199254740993::int8 as n, 42::int8 as small, sum(x)::int8 as sum from (values (1), (2)) as v(x)`.execute(db);
  assert.deepEqual(big.rows, [{ n: '9007199254740993', small: '42', sum: '3' }]);
  // And from a real bigint column.
  const merchant = await db.insertInto('merchants').values({ phone: '254700000101', business_name: 'Int8 Hardware' }).returning('id').executeTakeFirstOrThrow();
  const invoice = await db
    .insertInto('invoices')
    .values({ merchant_id: merchant.id, number: 1, customer_phone: '254711111101', amount: 250_000, description: 'Cement' })
    .returning(['amount', 'number'])
    .executeTakeFirstOrThrow();
  assert.equal(invoice.amount, '250000');
  assert.equal(typeof invoice.amount, 'string');
  assert.equal(invoice.number, 1, 'int4 stays a number');
  const counted = await db.selectFrom('invoices').select((eb) => eb.fn.countAll().as('n')).where('merchant_id', '=', merchant.id).executeTakeFirstOrThrow();
  assert.equal(counted.n, '1', 'count(*) is int8 too');
});

test('a rolled-back transaction leaves nothing while a concurrent committed one survives', async () => {
  const db = database.handle.db;
  const phones = { rolledBack: '254700000201', committed: '254700000202' };
  // On Postgres the two transactions are made to overlap: each waits until the other has
  // written inside its own open transaction. The embedded database has one session, so
  // its transactions queue; they still run "concurrently" from the caller's side.
  const overlap = database.kind === 'postgres';
  let signalRolledBackWrote = (): void => undefined;
  let signalCommittedWrote = (): void => undefined;
  const rolledBackWrote = new Promise<void>((resolve) => (signalRolledBackWrote = resolve));
  const committedWrote = new Promise<void>((resolve) => (signalCommittedWrote = resolve));
  let sawOtherUncommitted: boolean | undefined;

  const rollingBack = db.transaction().execute(async (trx) => {
    await trx.insertInto('merchants').values({ phone: phones.rolledBack, business_name: 'Never' }).execute();
    signalRolledBackWrote();
    if (overlap) await committedWrote;
    throw new Error('business rule failed');
  });
  const committing = db.transaction().execute(async (trx) => {
    await trx.insertInto('merchants').values({ phone: phones.committed, business_name: 'Kept' }).execute();
    signalCommittedWrote();
    if (overlap) await rolledBackWrote;
    const visible = await trx.selectFrom('merchants').select('phone').where('phone', '=', phones.rolledBack).execute();
    sawOtherUncommitted = visible.length > 0;
    return 'committed';
  });
  const [rolledBack, committed] = await Promise.allSettled([rollingBack, committing]);
  assert.equal(rolledBack.status, 'rejected');
  assert.match(String(rolledBack.status === 'rejected' ? rolledBack.reason : ''), /business rule failed/);
  assert.deepEqual(committed, { status: 'fulfilled', value: 'committed' });
  assert.equal(sawOtherUncommitted, false, 'no dirty reads');

  const rows = await db.selectFrom('merchants').select(['phone', 'business_name']).where('phone', 'in', [phones.rolledBack, phones.committed]).execute();
  assert.deepEqual(rows, [{ phone: phones.committed, business_name: 'Kept' }]);
});

test('a statement that fails inside a transaction rolls it back and the connection stays usable', async () => {
  const db = database.handle.db;
  await assert.rejects(
    db.transaction().execute(async (trx) => {
      await trx.insertInto('merchants').values({ phone: '254700000301', business_name: 'First' }).execute();
      await trx.insertInto('merchants').values({ phone: '254700000301', business_name: 'Duplicate' }).execute();
    }),
    (error: Error & { code?: string }) => error.code === '23505',
  );
  const rows = await db.selectFrom('merchants').select('phone').where('phone', '=', '254700000301').execute();
  assert.deepEqual(rows, []);
  const ok = await sql<{ one: number }>`select 1 as one`.execute(db);
  assert.deepEqual(ok.rows, [{ one: 1 }]);
  assert.equal(await database.handle.ping(1_000), true);
});

test('Postgres: a session left idle inside a transaction is ended after DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS, and its row locks with it; 0 never ends it', async (t) => {
  if (testDatabaseUrl === undefined) {
    t.skip('a setting of Postgres sessions (TEST_DATABASE_URL)');
    return;
  }
  const url = testDatabaseUrl;
  const timed = await openDatabase({ kind: 'postgres', url, poolMax: 2, idleInTransactionTimeoutMs: 300 });
  const never = await openDatabase({ kind: 'postgres', url, poolMax: 2, idleInTransactionTimeoutMs: 0 });
  try {
    assert.equal((await timed.pool.query<{ v: string }>("select current_setting('idle_in_transaction_session_timeout') as v")).rows[0]?.v, '300ms');
    assert.equal((await never.pool.query<{ v: string }>("select current_setting('idle_in_transaction_session_timeout') as v")).rows[0]?.v, '0');
    // A machine stopped mid-transaction, holding a lock (here an advisory one any session sees).
    const stuck = await timed.pool.connect();
    // Postgres ending the session is an 'error' on the checked-out client: handled, not a crash.
    stuck.on('error', () => undefined);
    await stuck.query('begin');
    await stuck.query('select pg_advisory_xact_lock(424242)');
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    // Ended by Postgres: the lock is free for another session, and the stuck client's next statement fails.
    const free = (await never.pool.query<{ got: boolean }>('select pg_try_advisory_lock(424242) as got')).rows[0]?.got;
    assert.equal(free, true, 'the lock was released with the session');
    await never.pool.query('select pg_advisory_unlock(424242)');
    await assert.rejects(stuck.query('select 1'));
    stuck.release(true);

    // With 0 the same transaction lives on.
    const patient = await never.pool.connect();
    await patient.query('begin');
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.deepEqual((await patient.query<{ n: number }>('select 1 as n')).rows, [{ n: 1 }]);
    await patient.query('rollback');
    patient.release();
  } finally {
    await timed.close();
    await never.close();
  }
});

test('Postgres: a statement that waits longer than DATABASE_LOCK_TIMEOUT_MS for a row lock is cancelled (55P03) and the connection serves on; a long statement is not cut short; 0 waits', async (t) => {
  if (testDatabaseUrl === undefined) {
    t.skip('a setting of Postgres sessions (TEST_DATABASE_URL)');
    return;
  }
  const url = testDatabaseUrl;
  const timed = await openDatabase({ kind: 'postgres', url, poolMax: 1, lockTimeoutMs: 300, idleInTransactionTimeoutMs: 60_000 });
  const never = await openDatabase({ kind: 'postgres', url, poolMax: 3, lockTimeoutMs: 0 });
  const table = `lock_probe_${process.pid}_${Date.now()}`;
  try {
    const setting = async (handle: typeof timed, name: string) => (await handle.pool.query<{ v: string }>('select current_setting($1) as v', [name])).rows[0]?.v;
    assert.equal(await setting(timed, 'lock_timeout'), '300ms');
    // Both settings reach the same connection (one statement on connect).
    assert.equal(await setting(timed, 'idle_in_transaction_session_timeout'), '1min');
    assert.equal(await setting(never, 'lock_timeout'), '0');
    await never.pool.query(`create table ${table} (id int primary key, n int not null)`);
    await never.pool.query(`insert into ${table} values (1, 0)`);

    // A row locked by another session (a machine stuck mid-transaction).
    const holder = await never.pool.connect();
    try {
      await holder.query('begin');
      await holder.query(`select * from ${table} where id = 1 for update`);
      const started = performance.now();
      await assert.rejects(timed.pool.query(`update ${table} set n = n + 1 where id = 1`), (error: { code?: string }) => error.code === '55P03');
      assert.ok(performance.now() - started < 1_900, 'cancelled after its timeout, not when the lock came free');
      // The same (only) connection answers the next statement; a long one is not cut short.
      assert.deepEqual((await timed.pool.query<{ n: number }>('select 1 as n from pg_sleep(0.6)')).rows, [{ n: 1 }]);
      // With 0 the wait lasts until the lock is free.
      const patient = never.pool.query(`update ${table} set n = n + 1 where id = 1`);
      await new Promise((resolve) => setTimeout(resolve, 600));
      await holder.query('rollback');
      await patient;
    } finally {
      holder.release();
    }
    assert.deepEqual((await never.pool.query<{ n: number }>(`select n from ${table}`)).rows, [{ n: 1 }], 'only the patient update went through');
  } finally {
    await never.pool.query(`drop table if exists ${table}`).catch(() => undefined);
    await timed.close();
    await never.close();
  }
});

test('the embedded database takes a lock; a second process is refused clearly and nothing is corrupted', async () => {
  const dataDir = tempDataDir();
  const lockPath = join(dataDir, 'invoiceiq.lock');
  const handle = await openDatabase({ kind: 'embedded', dataDir });
  let closed = false;
  try {
    assert.equal(handle.kind, 'embedded');
    assert.equal(readFileSync(lockPath, 'utf8').trim(), String(process.pid));
    await createNotes(handle);
    await sql`insert into notes (body) values ('before the second process')`.execute(handle.db);

    const second = await runNode(['--import', 'tsx', fixture, dataDir]);
    assert.equal(second.code, 2, `the second open must fail; stdout: ${second.stdout}`);
    assert.match(second.stderr, /^DataDirLockedError: /m);
    assert.match(second.stderr, new RegExp(`already in use by process ${process.pid}\\b`));
    assert.match(second.stderr, /DATA_DIR/);
    assert.ok(second.stderr.includes(dataDir), 'names the directory');
    assert.doesNotMatch(second.stdout, /opened/);

    // The holder is untouched: lock still ours, database still answers and takes writes.
    assert.equal(readFileSync(lockPath, 'utf8').trim(), String(process.pid));
    assert.equal(await handle.ping(1_000), true);
    await sql`insert into notes (body) values ('after the second process')`.execute(handle.db);
    assert.deepEqual(await noteBodies(handle), ['before the second process', 'after the second process']);

    // The service itself says the same thing, without a stack trace.
    const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'silent' };
    delete env.DATABASE_URL;
    delete env.TEST_DATABASE_URL;
    delete env.APP_ENV;
    const service = await runNode(['--import', 'tsx', 'src/main.ts'], env);
    assert.equal(service.code, 1);
    assert.match(service.stderr, /already in use by process/);
    assert.doesNotMatch(service.stderr, /^\s{4}at /m);

    await handle.close();
    closed = true;
    assert.ok(!existsSync(lockPath), 'close() removes the lock');

    // Another process can now open it, and sees everything written before.
    const third = await runNode(['--import', 'tsx', fixture, dataDir]);
    assert.equal(third.code, 0, third.stderr);
    assert.deepEqual(JSON.parse(third.stdout.trim()), { opened: true, notes: 2 });
    assert.ok(!existsSync(lockPath), 'the other process released it too');
  } finally {
    if (!closed) await handle.close();
  }
});

test('a second open of the same directory in the same process is refused too', async () => {
  const dataDir = tempDataDir();
  const handle = await openDatabase({ kind: 'embedded', dataDir });
  try {
    await assert.rejects(openDatabase({ kind: 'embedded', dataDir }), (error: Error) => {
      assert.ok(error instanceof DataDirLockedError);
      assert.match(error.message, new RegExp(`already in use by process ${process.pid}\\b`));
      return true;
    });
    assert.equal(await handle.ping(1_000), true, 'the first handle still works');
    assert.equal(readFileSync(join(dataDir, 'invoiceiq.lock'), 'utf8').trim(), String(process.pid));
  } finally {
    await handle.close();
  }
  const reopened = await openDatabase({ kind: 'embedded', dataDir });
  await reopened.close();
});

test('a lock held by another live process refuses the open without touching the data', async () => {
  const dataDir = tempDataDir();
  const holder = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  try {
    assert.ok(holder.pid);
    writeFileSync(join(dataDir, 'invoiceiq.lock'), String(holder.pid));
    await assert.rejects(openDatabase({ kind: 'embedded', dataDir }), (error: Error) => {
      assert.ok(error instanceof DataDirLockedError);
      assert.equal(error.name, 'DataDirLockedError');
      assert.match(error.message, new RegExp(`already in use by process ${holder.pid}\\b`));
      return true;
    });
    assert.equal(readFileSync(join(dataDir, 'invoiceiq.lock'), 'utf8'), String(holder.pid), 'the lock is left alone');
    assert.ok(!existsSync(join(dataDir, 'pglite')), 'the database was not opened');
  } finally {
    holder.kill('SIGKILL');
  }
});

test('a stale lock (its process is gone) is taken over', async () => {
  const dataDir = tempDataDir();
  const lockPath = join(dataDir, 'invoiceiq.lock');
  const first = await openDatabase({ kind: 'embedded', dataDir });
  await createNotes(first);
  await sql`insert into notes (body) values ('written before the crash')`.execute(first.db);
  await first.close();

  // As if a process crashed holding the lock.
  const pid = await deadPid();
  writeFileSync(lockPath, `${pid}\n`);
  const handle = await openDatabase({ kind: 'embedded', dataDir });
  try {
    assert.equal(readFileSync(lockPath, 'utf8').trim(), String(process.pid));
    assert.deepEqual(await noteBodies(handle), ['written before the crash']);
  } finally {
    await handle.close();
  }
  assert.ok(!existsSync(lockPath));

  // An unreadable (empty or garbage) lock is stale too.
  for (const content of ['', 'not-a-pid']) {
    writeFileSync(lockPath, content);
    const again = await openDatabase({ kind: 'embedded', dataDir });
    assert.equal(readFileSync(lockPath, 'utf8').trim(), String(process.pid));
    await again.close();
  }
});

test('close() releases the lock, is idempotent, and a later open sees the data written before', async () => {
  const dataDir = tempDataDir();
  const lockPath = join(dataDir, 'invoiceiq.lock');
  const handle = await openDatabase({ kind: 'embedded', dataDir });
  await createNotes(handle);
  await sql`insert into notes (body) values ('one'), ('two')`.execute(handle.db);
  await Promise.all([handle.close(), handle.close()]);
  await handle.close();
  assert.ok(!existsSync(lockPath));
  assert.equal(await handle.ping(500), false, 'a closed handle is not ready');

  const reopened = await openDatabase({ kind: 'embedded', dataDir });
  try {
    assert.ok(existsSync(lockPath));
    assert.deepEqual(await noteBodies(reopened), ['one', 'two']);
    const big = await sql<{ n: unknown }>`select 12345678901234::int8 as n`.execute(reopened.db);
    assert.deepEqual(big.rows, [{ n: '12345678901234' }], 'int8 as a string on the file-backed database too');
  } finally {
    await reopened.close();
  }
  assert.ok(!existsSync(lockPath));
});

test('a wamid or an SMS id belongs to one message at most; the many messages with neither are not in those indexes, and lookups by either id use them', async () => {
  const db = database.handle.db;
  const message = (wamid: string | null, smsId: string | null) =>
    db
      .insertInto('outbound_messages')
      .values({ recipient: '254700000901', kind: 'reply', content: JSON.stringify({ message: { type: 'text', body: 'x' } }), provider_message_id: wamid, sms_message_id: smsId })
      .execute();
  await message('wamid.UNIQUE-ONE', null);
  await message(null, 'ATXid_unique_one');
  await message(null, null);
  await message(null, null);
  await assert.rejects(message('wamid.UNIQUE-ONE', null), /duplicate key value violates unique constraint "outbound_messages_wamid_key"/);
  await assert.rejects(message(null, 'ATXid_unique_one'), /duplicate key value violates unique constraint "outbound_messages_sms_id_key"/);
  const indexes = await sql<{ indexdef: string }>`select indexdef from pg_indexes where tablename = 'outbound_messages' and indexdef like '%message_id%'`.execute(db);
  assert.deepEqual(
    indexes.rows.map((row) => row.indexdef.replace(/^.* USING /, '')).sort(),
    ['btree (provider_message_id) WHERE (provider_message_id IS NOT NULL)', 'btree (sms_message_id) WHERE (sms_message_id IS NOT NULL)'],
  );
  // As the status reports ask (src/inbound/whatsapp.ts, src/inbound/sms-report.ts), with the id as a parameter.
  for (const [column, index] of [
    ['provider_message_id', 'outbound_messages_wamid_key'],
    ['sms_message_id', 'outbound_messages_sms_id_key'],
  ] as const) {
    const plan = await db.transaction().execute(async (trx) => {
      // A handful of rows: without this a scan of the table would be cheaper.
      await sql`set local enable_seqscan = off`.execute(trx);
      return trx.selectFrom('outbound_messages').select('id').where(column, '=', 'some-id').forUpdate().explain();
    });
    assert.match(JSON.stringify(plan), new RegExp(`using ${index}`), column);
  }
});
