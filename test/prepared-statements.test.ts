/**
 * Repeated statements run as named prepared statements (src/db/prepared.ts): which texts get a
 * name, that a connection then holds them prepared (pg_prepared_statements, both databases),
 * that they answer as before (rows, errors, transactions), and that what must not be named is
 * not (texts that change with their data, pg-pool's own query, statements with no values).
 * Also that the hot statements now have one text however many keys they carry (keyIn).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sql, type Transaction } from 'kysely';
import type { Database } from '../src/db/schema.js';
import { keyIn } from '../src/db/json.js';
import { MAX_NAMED, REPEATS_BEFORE_NAMING, statementNames } from '../src/db/prepared.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';

let database: TestDatabase;
before(async () => {
  database = await createTestDatabase();
});
after(() => database.dispose());

test('a text gets a name on its third use, the same name from then on; another text another name', () => {
  const names = statementNames();
  assert.equal(REPEATS_BEFORE_NAMING, 3);
  assert.equal(names.nameFor('select $1'), undefined);
  assert.equal(names.nameFor('select $1'), undefined);
  const name = names.nameFor('select $1');
  assert.match(name ?? '', /^iq_[0-9a-f]{32}$/);
  assert.equal(names.nameFor('select $1'), name);
  assert.equal(names.nameFor('select $1 '), undefined, 'a different text starts its own count');
  names.nameFor('select $1 ');
  const other = names.nameFor('select $1 ');
  assert.ok(other !== undefined && other !== name);
  assert.equal(names.named, 2);
  // Another process names the same text the same way (pg refuses one name for two texts, so the name is the text's digest).
  const again = statementNames();
  for (let i = 0; i < 3; i += 1) again.nameFor('select $1');
  assert.equal(again.nameFor('select $1'), name);
});

test('at most MAX_NAMED texts are ever named; texts named before keep their names', () => {
  const names = statementNames({ repeats: 1, max: 4 });
  const first = names.nameFor('t0');
  for (let i = 1; i < 10; i += 1) names.nameFor(`t${i}`);
  assert.equal(names.named, 4);
  assert.equal(names.nameFor('t9'), undefined, 'past the cap: runs unnamed');
  assert.equal(names.nameFor('t0'), first);
  assert.ok(MAX_NAMED >= 16 && MAX_NAMED <= 256);
});

test('texts that never repeat are never named, however many there are', () => {
  const names = statementNames();
  for (let i = 0; i < 10_000; i += 1) assert.equal(names.nameFor(`select ${i}`), undefined);
  assert.equal(names.named, 0);
});

/** The names this connection holds prepared (inside `trx`: one connection). */
async function preparedHere(trx: Transaction<Database>): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`select name from pg_prepared_statements where name like 'iq\\_%' order by name`.execute(trx);
  return rows.map((row) => row.name);
}

test('a statement Kysely runs a third time on a connection is prepared there, and answers the same rows', async () => {
  const db = database.handle.db;
  const phones = ['254700900001', '254700900002', '254700900003'];
  await db.insertInto('merchants').values(phones.map((phone, i) => ({ phone, business_name: `Prepared ${i}` }))).execute();
  const answers = await db.transaction().execute(async (trx) => {
    const before = await preparedHere(trx);
    const out: string[][] = [];
    // The same text each time (one array parameter), different keys each time.
    for (const keys of [[phones[0]!], [phones[0]!, phones[1]!], phones, [phones[2]!], []]) {
      const rows = await trx.selectFrom('merchants').select('phone').where(keyIn('phone', keys)).orderBy('phone').execute();
      out.push(rows.map((row) => row.phone));
    }
    const afterwards = await preparedHere(trx);
    return { before, afterwards, out };
  });
  assert.deepEqual(answers.out, [[phones[0]], [phones[0], phones[1]], phones, [phones[2]], []]);
  const added = answers.afterwards.filter((name) => !answers.before.includes(name));
  assert.ok(added.length >= 1, `the repeated select was prepared on its connection (${answers.afterwards.join(', ')})`);
});

test('keyIn has one text for any number of keys, so it can repeat; the former IN list had one per length', () => {
  const db = database.handle.db;
  const text = (keys: string[]) => db.selectFrom('merchants').select('id').where(keyIn('phone', keys)).compile().sql;
  assert.equal(text(['a']), text(['a', 'b', 'c']));
  assert.match(text(['a']), /= any\(\$1\)/);
});

test('a prepared statement that fails (a unique key) fails as before, and runs again afterwards', async () => {
  const db = database.handle.db;
  const insert = (phone: string) => db.insertInto('merchants').values({ phone, business_name: 'Twice' }).execute();
  await db.transaction().execute(async (trx) => {
    const insertHere = (phone: string) => trx.insertInto('merchants').values({ phone, business_name: 'Twice' }).execute();
    await insertHere('254700910001');
    await insertHere('254700910002');
    await insertHere('254700910003');
    await insertHere('254700910004');
    assert.ok((await preparedHere(trx)).length >= 1);
  });
  await assert.rejects(insert('254700910001'), (error: Error & { code?: string }) => error.code === '23505');
  for (let i = 0; i < 4; i += 1) await assert.rejects(insert('254700910002'), (error: Error & { code?: string }) => error.code === '23505');
  await insert('254700910005');
  const { n } = await db.selectFrom('merchants').select(sql<number>`count(*)::int`.as('n')).where('phone', 'like', '2547009100%').executeTakeFirstOrThrow();
  assert.equal(n, 5);
});

test('not named: pg-pool\'s own query on Postgres (pg-boss), statements with no values, and texts that change with their data', async () => {
  const { pool, db } = database.handle;
  for (let i = 0; i < 5; i += 1) await pool.query('select $1::int as n', [i]);
  const prepared = await db.transaction().execute(async (trx) => {
    for (let i = 0; i < 5; i += 1) await sql`select 1 as one`.execute(trx);
    // An IN list of its own length: a new text each time.
    for (let n = 1; n <= 5; n += 1) {
      const keys = Array.from({ length: n }, (_, i) => `k${i}`);
      await trx.selectFrom('merchants').select('id').where('phone', 'in', keys).execute();
    }
    const { rows } = await sql<{ statement: string }>`select statement from pg_prepared_statements where name like 'iq\\_%'`.execute(trx);
    return rows.map((row) => row.statement);
  });
  // pg-pool's query passes its client a callback; the embedded database's pool.query hands the
  // call to its one client as Kysely does, so there it is named like any other.
  if (database.kind === 'postgres') assert.ok(!prepared.some((text) => text.includes('$1::int as n')), 'pool.query stays unnamed');
  assert.ok(!prepared.some((text) => text.includes('select 1 as one')), 'no values: unnamed');
  assert.ok(!prepared.some((text) => /"phone" in \(/.test(text)), 'a text of its own length each time: unnamed');
});
