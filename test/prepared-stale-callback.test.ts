/**
 * A rolling deploy's migration adds a column to payment_attempts while callbacks come in one
 * at a time: the callback lookup (a prepared `select *`, src/db/prepared.ts) is refused once by
 * Postgres ("cached plan must not change result type"). A callback alone in its group is tried
 * again, unnamed, and answered 200 and applied, not 500 (Safaricom does not send it again, and
 * the STK query that would heal it carries no receipt number). Both databases; on the embedded
 * one (one connection) the refusal is certain, on Postgres the pool hands sequential callbacks
 * the connection just released.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import { callbackTo, paidBody, seedAttempts } from './helpers/callback-groups.js';
import { startChannelFixture, type ChannelFixture } from './helpers/channel.js';

let f: ChannelFixture;
before(async () => {
  f = await startChannelFixture({ env: { MPESA_CALLBACK_URL: 'https://invoiceiq.example/payments/stk/callback' } });
});
after(() => f.close());

test('a column added to payment_attempts under the prepared callback lookup: the next callback alone is still answered 200 and pays its invoice', async () => {
  const { attempts } = await seedAttempts(f, 8);
  // One at a time (each alone in its group): the lookup's text repeats and is prepared.
  for (const [i, a] of attempts.slice(0, 4).entries()) {
    const res = await callbackTo(f, a.token, paidBody(a, `RDP${i}0000001`));
    assert.equal(res.status, 200);
    await f.deps.outbox.idle();
  }
  // The release command of the next version.
  await sql`alter table payment_attempts add column deploy_note text`.execute(f.database.handle.db);
  for (const [i, a] of attempts.slice(4).entries()) {
    const res = await callbackTo(f, a.token, paidBody(a, `RDP${i}0000002`));
    assert.equal(res.status, 200, `callback ${i + 5} after the migration: ${await res.text()}`);
    await f.deps.outbox.idle();
  }
  const paid = await f.database.handle.db
    .selectFrom('invoices')
    .select(['id', 'status', 'mpesa_receipt'])
    .where(
      'id',
      'in',
      attempts.map((a) => a.invoiceId),
    )
    .execute();
  assert.equal(paid.length, 8);
  for (const row of paid) {
    assert.equal(row.status, 'paid');
    assert.match(row.mpesa_receipt ?? '', /^RDP\d0000\d{3}$/);
  }
});
