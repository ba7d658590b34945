/**
 * Per-merchant invoice numbers under concurrency, on both databases: no duplicates, no gaps,
 * a rolled-back allocation gives its number back, and merchants count separately.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { allocateInvoiceNumber } from '../src/db/repositories/invoices.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';

let database: TestDatabase;
before(async () => {
  database = await createTestDatabase();
});
after(() => database.dispose());

async function merchant(phone: string): Promise<string> {
  const row = await database.handle.db.insertInto('merchants').values({ phone, business_name: phone }).returning('id').executeTakeFirstOrThrow();
  return row.id;
}

test('twenty concurrent allocations (some rolled back) give 1..N with no gaps or duplicates', async () => {
  const id = await merchant('254700900001');
  const committed: number[] = [];
  await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      database.handle.db
        .transaction()
        .execute(async (trx) => {
          const number = await allocateInvoiceNumber(trx, id);
          await trx.insertInto('invoices').values({ merchant_id: id, number, customer_phone: '254711000000', amount: 100, description: `n${i}` }).execute();
          if (i % 5 === 0) throw new Error('rolled back on purpose');
          committed.push(number);
        })
        .catch((error: Error) => assert.match(error.message, /on purpose/)),
    ),
  );
  const numbers = (await database.handle.db.selectFrom('invoices').select('number').where('merchant_id', '=', id).orderBy('number').execute()).map((r) => r.number);
  assert.equal(numbers.length, 16);
  assert.deepEqual(numbers, Array.from({ length: 16 }, (_, i) => i + 1));
  assert.deepEqual([...committed].sort((a, b) => a - b), numbers);
});

test('each merchant has its own sequence', async () => {
  const a = await merchant('254700900002');
  const b = await merchant('254700900003');
  const got = await database.handle.db.transaction().execute(async (trx) => [
    await allocateInvoiceNumber(trx, a),
    await allocateInvoiceNumber(trx, b),
    await allocateInvoiceNumber(trx, a),
  ]);
  assert.deepEqual(got, [1, 1, 2]);
});
