/**
 * Named prepared statements (src/db/prepared.ts): which texts are named, and on a real
 * Postgres that a repeated statement is parsed once per connection, that the switch turns it
 * off, and that a table changed under a prepared `select *` heals instead of failing for good.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql, type Kysely } from 'kysely';
import { openDatabase, type DatabaseHandle } from '../src/db/connect.js';
import { MAX_PREPARED_NAMES, statementNames } from '../src/db/prepared.js';
import { createEmptyDatabase, testDatabaseUrl, type TestDatabase } from './helpers/database.js';

describe('statementNames', () => {
  test('a text is named from its second run on, always with the same name', () => {
    const names = statementNames();
    const text = 'select * from invoices where id = $1';
    assert.equal(names.nameOf(text), undefined);
    const name = names.nameOf(text);
    assert.match(name ?? '', /^iq_0_\d+$/);
    assert.equal(names.nameOf(text), name);
    assert.equal(names.size, 1);
  });

  test('two texts never share a name', () => {
    const names = statementNames();
    const texts = ['select 1 where $1::int > 0', 'select 2 where $1::int > 0', 'with a as (select 1) select * from a', 'insert into t values ($1)', 'update t set a = $1', 'delete from t where a = $1'];
    for (const text of texts) names.nameOf(text);
    const given = texts.map((text) => names.nameOf(text));
    assert.ok(given.every((name) => name !== undefined));
    assert.equal(new Set(given).size, texts.length);
  });

  test('transaction control and other utility statements are never named', () => {
    const names = statementNames();
    for (const text of ['begin', 'commit', 'rollback', 'start transaction isolation level serializable', 'set local lock_timeout = 100', 'savepoint a']) {
      names.nameOf(text);
      assert.equal(names.nameOf(text), undefined, text);
    }
    assert.equal(names.size, 0);
  });

  test('at most the cap is named; later texts run unnamed', () => {
    const names = statementNames(3);
    for (let i = 0; i < 5; i += 1) {
      names.nameOf(`select ${i}`);
      names.nameOf(`select ${i}`);
    }
    assert.equal(names.size, 3);
    assert.equal(names.nameOf('select 4'), undefined);
    assert.ok(names.nameOf('select 0') !== undefined, 'a text named before the cap keeps its name');
    assert.ok(MAX_PREPARED_NAMES >= 100);
  });

  test('renew gives every text a new name (never an old one)', () => {
    const names = statementNames();
    names.nameOf('select 1');
    const first = names.nameOf('select 1');
    names.renew();
    assert.equal(names.size, 0);
    assert.equal(names.nameOf('select 1'), undefined);
    const second = names.nameOf('select 1');
    assert.ok(first !== undefined && second !== undefined && first !== second);
  });
});

describe('prepared statements on Postgres', { skip: testDatabaseUrl === undefined ? 'needs TEST_DATABASE_URL (a real Postgres)' : false }, () => {
  type Items = { items: { id: number; name: string; note: string | null; extra: number | null } };
  /** The handle's Kysely over this test's own table. */
  const itemsOf = (handle: DatabaseHandle) => handle.db as unknown as Kysely<Items>;
  let empty: TestDatabase;
  let prepared: DatabaseHandle;
  let unprepared: DatabaseHandle;

  before(async () => {
    empty = await createEmptyDatabase();
    await sql`create table items (id int primary key, name text not null)`.execute(empty.handle.db);
    await sql`insert into items values (1, 'one'), (2, 'two')`.execute(empty.handle.db);
    // One connection each: every statement runs on the same server session.
    prepared = await openDatabase({ kind: 'postgres', url: empty.url!, poolMax: 1 });
    unprepared = await openDatabase({ kind: 'postgres', url: empty.url!, poolMax: 1, prepare: false });
  });
  after(async () => {
    await prepared?.close();
    await unprepared?.close();
    await empty?.dispose();
  });

  /** The statements the handle's (only) connection has prepared. */
  async function preparedHere(handle: DatabaseHandle): Promise<string[]> {
    const { rows } = await handle.pool.query<{ statement: string }>('select statement from pg_prepared_statements where from_sql = false');
    return rows.map((row) => row.statement);
  }

  test('a statement run again is prepared once on its connection, and answers as before', async () => {
    const read = (id: number) => itemsOf(prepared).selectFrom('items').select(['id', 'name']).where('id', '=', id).executeTakeFirst();
    assert.deepEqual(await read(1), { id: 1, name: 'one' });
    assert.deepEqual(await preparedHere(prepared), [], 'a statement seen once stays unnamed');
    assert.deepEqual(await read(2), { id: 2, name: 'two' });
    assert.deepEqual(await read(1), { id: 1, name: 'one' });
    const statements = await preparedHere(prepared);
    assert.equal(statements.length, 1);
    assert.match(statements[0]!, /from "items" where "id" = \$1/);
    // In a transaction too (Kysely's begin and commit are not prepared).
    await itemsOf(prepared).transaction().execute(async (trx) => {
      assert.equal((await trx.selectFrom('items').select('name').where('id', '=', 2).executeTakeFirst())?.name, 'two');
    });
    assert.equal((await preparedHere(prepared)).length, 1);
  });

  test('DATABASE_PREPARED_STATEMENTS=false: nothing is prepared', async () => {
    for (let i = 0; i < 3; i += 1) await itemsOf(unprepared).selectFrom('items').select('name').where('id', '=', 1).execute();
    assert.deepEqual(await preparedHere(unprepared), []);
  });

  test('a table changed under a prepared select * heals: at once outside a transaction, on the retry inside one', async () => {
    const all = () => itemsOf(prepared).selectFrom('items').selectAll().where('id', '=', 1).executeTakeFirst();
    await all();
    await all();
    assert.ok((await preparedHere(prepared)).some((statement) => statement.startsWith('select * from "items"')));
    // Another machine's migration.
    await sql`alter table items add column note text`.execute(unprepared.db);
    // Outside a transaction: prepared again, and answered with the new column.
    assert.deepEqual(await all(), { id: 1, name: 'one', note: null });

    // The names given up are dropped from the connection when it is next taken; the statement
    // is named again on its second run.
    await all();
    assert.deepEqual(await preparedHere(prepared), []);
    await all();
    assert.ok((await preparedHere(prepared)).some((statement) => statement.startsWith('select * from "items"')));
    await sql`alter table items add column extra int`.execute(unprepared.db);
    // Inside a transaction the statement fails (the transaction is aborted anyway)...
    await assert.rejects(
      itemsOf(prepared).transaction().execute((trx) => trx.selectFrom('items').selectAll().where('id', '=', 1).executeTakeFirst()),
      (error: { code?: string }) => error.code === '0A000',
    );
    // ...and the caller's retry prepares it afresh.
    const again = await itemsOf(prepared).transaction().execute((trx) => trx.selectFrom('items').selectAll().where('id', '=', 1).executeTakeFirst());
    assert.deepEqual(again, { id: 1, name: 'one', note: null, extra: null });
  });
});
