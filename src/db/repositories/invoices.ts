/**
 * Invoice repository functions that need a transaction (the type forces one).
 */
import { sql, type Transaction } from 'kysely';
import type { Database } from '../schema.js';

/**
 * Hands out the merchant's next invoice number. The UPDATE takes the merchant row's lock
 * until the transaction ends, so concurrent allocations queue behind each other: numbers
 * are never duplicated, and a rolled-back transaction gives its number back (no gaps).
 */
export async function allocateInvoiceNumber(trx: Transaction<Database>, merchantId: string): Promise<number> {
  const row = await trx
    .updateTable('merchants')
    .set({ next_invoice_number: sql`next_invoice_number + 1`, updated_at: sql`now()` })
    .where('id', '=', merchantId)
    .returning(sql<number>`next_invoice_number - 1`.as('number'))
    .executeTakeFirstOrThrow();
  return row.number;
}
