/**
 * rowsOf (src/db/json.ts): rows handed to a statement as one array per column, read back by
 * `unnest`. Every value comes back as it went in (text with quotes, backslashes, braces,
 * commas, the word NULL, emoji; jsonb; timestamps to the millisecond; NULLs), cleaned as jsonb()
 * cleans, and the planner knows how many rows there are (a JSON recordset always counts as
 * 100), so a join to a table by its key looks each row up through the index. Both databases.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { sql } from 'kysely';
import { jsonb, rowsOf, storable } from '../src/db/json.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';

let database: TestDatabase;
before(async () => {
  database = await createTestDatabase();
});
after(() => database.dispose());

type Row = { id: string; name: string | null; n: number | null; at: Date | null; data: unknown };

const tricky = fc.string({ unit: fc.constantFrom('"', '\\', '{', '}', ',', ' ', 'N', 'U', 'L', 'a', 'é', '🙂', '\u0000', '\uD83D', "'", '\n', '\t'), maxLength: 10 });

async function roundTrip(rows: readonly Row[]): Promise<Array<{ id: string; name: string | null; n: number | null; at: Date | null; data: unknown }>> {
  const { rows: back } = await sql<{ id: string; name: string | null; n: number | null; at: Date | null; data: unknown }>`
    select v.id, v.name, v.n, v.at, v.data from ${rowsOf('v', rows, { id: 'uuid', name: 'text', n: 'integer', at: 'timestamptz', data: 'jsonb' })}`.execute(database.handle.db);
  return back;
}

test('every value comes back as it went in (text cleaned of NUL and lone surrogates, as jsonb() does), in order, NULLs as NULL', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({
          name: fc.option(tricky),
          n: fc.option(fc.integer({ min: -2_000_000_000, max: 2_000_000_000 })),
          at: fc.option(fc.date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true })),
          data: fc.option(fc.oneof(tricky, fc.dictionary(tricky, tricky, { maxKeys: 3 }), fc.array(fc.integer(), { maxLength: 3 }))),
        }),
        { minLength: 1, maxLength: 8 },
      ),
      async (drawn) => {
        const rows: Row[] = drawn.map((row, i) => ({ id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, ...row }));
        const back = await roundTrip(rows);
        assert.deepEqual(
          back.map((row) => row.id),
          rows.map((row) => row.id),
        );
        back.forEach((row, i) => {
          const sent = rows[i]!;
          assert.equal(row.name, sent.name === null ? null : storable(sent.name));
          assert.equal(row.n, sent.n);
          assert.equal(row.at?.getTime() ?? null, sent.at?.getTime() ?? null);
          // jsonb gives its own key order and spacing back: compared as the JSON jsonb() wrote.
          assert.deepEqual(row.data, sent.data === null ? null : JSON.parse(jsonb(sent.data)));
        });
      },
    ),
    { numRuns: 60 },
  );
  // The text NULL, and an empty string, are text; undefined is NULL.
  const [row] = await roundTrip([{ id: '00000000-0000-4000-8000-000000000001', name: 'NULL', n: null, at: null, data: undefined }]);
  assert.equal(row!.name, 'NULL');
  assert.equal(row!.data, null);
  const [empty] = await roundTrip([{ id: '00000000-0000-4000-8000-000000000001', name: '', n: 0, at: null, data: '' }]);
  assert.equal(empty!.name, '');
  assert.equal(empty!.data, '');
});

test('the planner counts the rows it is given (a JSON recordset counts as 100 whatever it holds)', async () => {
  const estimate = async (from: ReturnType<typeof sql>) => {
    const { rows } = await sql<{ 'QUERY PLAN': unknown }>`explain (format json) select * from ${from}`.execute(database.handle.db);
    const raw = rows[0]!['QUERY PLAN'];
    const plan = (typeof raw === 'string' ? JSON.parse(raw) : raw) as Array<{ Plan: { 'Plan Rows': number } }>;
    return plan[0]!.Plan['Plan Rows'];
  };
  for (const count of [1, 7, 81, 458]) {
    const rows = Array.from({ length: count }, (_, i) => ({ id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, name: `n${i}` }));
    assert.equal(await estimate(rowsOf('v', rows, { id: 'uuid', name: 'text' })), count);
    // Control: the same rows as a JSON recordset.
    assert.equal(await estimate(sql`jsonb_to_recordset(${jsonb(rows)}::jsonb) as v(id uuid, name text)`), 100);
  }
});

test('joined to a table by its key, the rows are read once, never again for each row of the table (a JSON recordset was: 81 rows, 6,480 comparisons)', async () => {
  const db = database.handle.db;
  await sql`create table rows_of_probe (id uuid primary key, status text not null, note text)`.execute(db);
  await sql`
    insert into rows_of_probe (id, status)
    select gen_random_uuid(), case when i % 100 = 0 then 'sending' else 'sent' end from generate_series(1, 20000) as i`.execute(db);
  await sql`analyze rows_of_probe`.execute(db);
  const { rows: picked } = await sql<{ id: string }>`select id from rows_of_probe where status = 'sending' limit 81`.execute(db);
  type Node = { 'Node Type': string; 'Plan Rows': number; Plans?: Node[] };
  const nodes = (n: Node): Node[] => [n, ...(n.Plans ?? []).flatMap(nodes)];
  /** The recordset sits on a nested loop's inner side: read again for each outer row. */
  const readPerRow = async (from: ReturnType<typeof sql>, where: ReturnType<typeof sql> = sql`true`) => {
    const { rows } = await sql<{ 'QUERY PLAN': unknown }>`
      explain (format json) update rows_of_probe o set note = v.note from ${from}
      where o.id = v.id and ${where} and coalesce(o.status, '') = 'sending'`.execute(db);
    const raw = rows[0]!['QUERY PLAN'];
    const plan = nodes(((typeof raw === 'string' ? JSON.parse(raw) : raw) as Array<{ Plan: Node }>)[0]!.Plan);
    return plan.some((n) => n['Node Type'] === 'Nested Loop' && n.Plans![1]!['Node Type'] === 'Function Scan');
  };
  const values = picked.map((row, i) => ({ id: row.id, note: `n${i}` }));
  assert.equal(await readPerRow(rowsOf('v', values, { id: 'uuid', note: 'text' })), false);
  // Control: the same rows as a JSON recordset, with the key list it needed to use the index.
  assert.equal(
    await readPerRow(sql`jsonb_to_recordset(${jsonb(values)}::jsonb) as v(id uuid, note text)`, sql`o.id in (${sql.join(values.map((v) => v.id))})`),
    true,
    'control: the JSON recordset was not read per row here, so this test shows nothing',
  );
  // And the statement does update them.
  const { rows: updated } = await sql<{ id: string }>`
    update rows_of_probe o set note = v.note from ${rowsOf('v', values, { id: 'uuid', note: 'text' })}
    where o.id = v.id and coalesce(o.status, '') = 'sending' returning o.id`.execute(db);
  assert.equal(updated.length, values.length);
});

test('no columns is a mistake, said at once', () => {
  assert.throws(() => rowsOf('v', [{ a: 1 }], {}), /no columns/);
});
