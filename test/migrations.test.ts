import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import { migrationsFolder, runMigrateCommand } from '../src/db/migrate.js';
import { createEmptyDatabase, type TestDatabase } from './helpers/database.js';
import { runNode, type Run } from './helpers/process.js';


const coreTables = ['merchants', 'conversations', 'invoices', 'payment_attempts', 'inbound_events', 'outbound_messages', 'invoice_events'];

/** Every migration, by name, in the order Kysely runs them. */
const migrationNames = readdirSync(migrationsFolder)
  .filter((file) => /\.(ts|js|mjs)$/.test(file) && !file.endsWith('.d.ts'))
  .map((file) => file.replace(/\.(ts|js|mjs)$/, ''))
  .sort();

let database: TestDatabase;

before(async () => {
  database = await createEmptyDatabase();
});

after(async () => {
  await database.dispose();
});

async function run(args: string[]): Promise<string[]> {
  const lines: string[] = [];
  await runMigrateCommand(database.handle.db, args, (line) => lines.push(line));
  return lines;
}

async function publicTables(): Promise<string[]> {
  const result = await sql<{ table_name: string }>`
    select table_name from information_schema.tables
    where table_schema = 'public' and table_type = 'BASE TABLE'
    order by table_name`.execute(database.handle.db);
  return result.rows.map((row) => row.table_name);
}

type PgError = Error & { code?: string; constraint?: string };

async function rejectsWith(promise: Promise<unknown>, code: string, constraint?: string): Promise<void> {
  await assert.rejects(promise, (error: PgError) => {
    assert.equal(error.code, code, `${error.message}`);
    if (constraint !== undefined) assert.equal(error.constraint, constraint, error.message);
    return true;
  });
}

test('there is at least one migration', () => {
  assert.ok(migrationNames.length >= 1);
  assert.ok(migrationNames.some((name) => name.endsWith('core_tables')));
});

test('status on an empty database lists every migration as pending', async () => {
  const lines = await run(['status']);
  assert.deepEqual(
    lines,
    migrationNames.map((name) => `pending  ${name}`),
  );
  assert.deepEqual(await publicTables(), []);
});

test('latest applies every migration; status then lists them as applied', async () => {
  const applied = await run(['latest']);
  assert.deepEqual(
    applied,
    migrationNames.map((name) => `applied ${name}`),
  );
  const status = await run(['status']);
  assert.equal(status.length, migrationNames.length);
  status.forEach((line, index) => {
    assert.match(line, new RegExp(`^applied  ${migrationNames[index]}  \\(\\d{4}-\\d{2}-\\d{2}T[\\d:.]+Z\\)$`));
  });
  const tables = await publicTables();
  for (const table of coreTables) assert.ok(tables.includes(table), `${table} exists`);
  assert.deepEqual(await run(['latest']), ['nothing to do'], 'latest again is a no-op');
});

test('the core constraints hold', async () => {
  const db = database.handle.db;
  const merchant = await db.insertInto('merchants').values({ phone: '254700000001', business_name: 'Mama Mboga' }).returning('id').executeTakeFirstOrThrow();
  const invoice = { merchant_id: merchant.id, number: 1, customer_phone: '254711111111', amount: 1500, description: 'Sukuma wiki' };
  await db.insertInto('invoices').values(invoice).execute();
  await rejectsWith(db.insertInto('invoices').values(invoice).execute(), '23505', 'invoices_merchant_number_key');
  // Another merchant may use the same number.
  const other = await db.insertInto('merchants').values({ phone: '254700000002', business_name: null }).returning('id').executeTakeFirstOrThrow();
  await db.insertInto('invoices').values({ ...invoice, merchant_id: other.id }).execute();

  await rejectsWith(db.insertInto('invoices').values({ ...invoice, number: 2, amount: 0 }).execute(), '23514');
  await rejectsWith(db.insertInto('invoices').values({ ...invoice, number: 3, amount: 250_001 }).execute(), '23514');
  await db.insertInto('invoices').values({ ...invoice, number: 4, amount: 250_000 }).execute();
  await rejectsWith(db.insertInto('invoices').values({ ...invoice, number: 5, description: '' }).execute(), '23514');
  await rejectsWith(db.insertInto('merchants').values({ phone: '254700000001', business_name: 'Duplicate' }).execute(), '23505');

  const event = { source: 'whatsapp_message' as const, external_key: 'wamid.ABC', payload: JSON.stringify({ n: 1 }) };
  await db.insertInto('inbound_events').values(event).execute();
  await rejectsWith(db.insertInto('inbound_events').values(event).execute(), '23505', 'inbound_events_source_key');
  // The same key from another source is a different event.
  await db.insertInto('inbound_events').values({ ...event, source: 'whatsapp_status' }).execute();

  const count = await db.selectFrom('invoices').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
  assert.equal(Number(count.n), 3);
  // Clean up so `down` can drop the tables (foreign keys are restrictive).
  await db.deleteFrom('inbound_events').execute();
  await db.deleteFrom('invoices').execute();
  await db.deleteFrom('merchants').execute();
});

test('down reverts the last migration and up re-applies it', async () => {
  const last = migrationNames[migrationNames.length - 1];
  assert.ok(last);
  assert.deepEqual(await run(['down']), [`reverted ${last}`]);
  const status = await run(['status']);
  assert.equal(status[status.length - 1], `pending  ${last}`);
  assert.deepEqual(await run(['up']), [`applied ${last}`]);
  assert.match((await run(['status']))[migrationNames.length - 1] ?? '', new RegExp(`^applied  ${last}  `));
  if (migrationNames.length === 1) {
    // The only migration made the core tables: down removed them, up brought them back.
    const tables = await publicTables();
    for (const table of coreTables) assert.ok(tables.includes(table), `${table} is back`);
  }
});

test('to 0 reverts every migration and the tables are gone', async () => {
  const reverted = await run(['to', '0']);
  assert.deepEqual(
    reverted,
    [...migrationNames].reverse().map((name) => `reverted ${name}`),
  );
  const tables = await publicTables();
  for (const table of coreTables) assert.ok(!tables.includes(table), `${table} is gone`);
  assert.deepEqual(
    await run(['status']),
    migrationNames.map((name) => `pending  ${name}`),
  );
  const first = migrationNames[0];
  assert.ok(first);
  assert.deepEqual(await run(['to', first]), [`applied ${first}`], 'to <name> migrates up to that migration');
  await run(['to', '0']);
});

test('an unknown verb, no verb, and `to` without a name throw with the usage', async () => {
  await assert.rejects(run(['sideways']), /usage: .*latest.*up.*down.*status.*to/);
  await assert.rejects(run([]), /usage:/);
  await assert.rejects(run(['to']), (error: Error) => /'to' needs a migration name/.test(error.message) && /usage:/.test(error.message));
  await assert.rejects(run(['to', '']), /usage:/);
  // Nothing was applied by the failed commands.
  const tables = await publicTables();
  for (const table of coreTables) assert.ok(!tables.includes(table), `${table} was not created`);
});

function runCli(args: string[], dataDir: string): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, LOG_LEVEL: 'silent' };
  delete env.DATABASE_URL;
  delete env.TEST_DATABASE_URL;
  delete env.APP_ENV;
  return runNode(['--import', 'tsx', 'src/cli/migrate.ts', ...args], env);
}

test('the migrate CLI works on the embedded database in DATA_DIR', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'invoiceiq-migrate-cli-'));
  try {
    const before = await runCli(['status'], dataDir);
    assert.equal(before.code, 0, before.stderr);
    assert.deepEqual(
      before.stdout.trim().split('\n'),
      migrationNames.map((name) => `pending  ${name}`),
    );
    const latest = await runCli(['latest'], dataDir);
    assert.equal(latest.code, 0, latest.stderr);
    assert.deepEqual(
      latest.stdout.trim().split('\n'),
      migrationNames.map((name) => `applied ${name}`),
    );
    const afterLatest = await runCli(['status'], dataDir);
    assert.equal(afterLatest.code, 0, afterLatest.stderr);
    const lines = afterLatest.stdout.trim().split('\n');
    assert.equal(lines.length, migrationNames.length);
    lines.forEach((line, index) => assert.ok(line.startsWith(`applied  ${migrationNames[index]}  (`), line));
    const bogus = await runCli(['sideways'], dataDir);
    assert.equal(bogus.code, 1);
    assert.match(bogus.stderr, /usage:/);
    assert.doesNotMatch(bogus.stderr, /^\s{4}at /m, 'no stack trace');
    assert.ok(existsSync(join(dataDir, 'pglite')), 'the database lives in DATA_DIR');
    assert.ok(!existsSync(join(dataDir, 'invoiceiq.lock')), 'the lock is released on exit');
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
