/**
 * Reconciliation through a long M-PESA outage (every STK query unanswered): each run keeps
 * working however many times an attempt has been asked, an attempt is given up only after a
 * day, and an attempt asked many times never holds up the others. Daraja is a stub client
 * here (the outage is its only behaviour); the rest is the real service on both databases
 * (TEST_DATABASE_URL set: Postgres; unset: PGlite).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createPayments } from '../src/payments/service.js';
import { TransportError } from '../src/providers/errors.js';
import type { DarajaClient } from '../src/providers/mpesa/client.js';
import { sha256Hex } from '../src/security.js';
import { startChannelFixture, type ChannelFixture } from './helpers/channel.js';

describe('reconciliation through a day-long M-PESA outage', () => {
  let clock = new Date('2026-11-22T07:00:00.000Z').getTime();
  const now = () => new Date(clock);
  let f: ChannelFixture;
  before(async () => {
    f = await startChannelFixture({ now, env: { DELIVERY_SAFETY_NET_SECONDS: '3600', MPESA_CALLBACK_URL: 'https://invoiceiq.example/payments/stk/callback' } });
  });
  after(async () => {
    await f.close();
  });

  let seq = 0;
  /** A merchant with one sent invoice of KES 100 and one pending attempt (CheckoutRequestID known), seeded in SQL. */
  async function seedAttempt(values: { createdAt: Date; lastQueriedAt?: Date; queryCount?: number }) {
    seq += 1;
    const db = f.database.handle.db;
    const merchant = `2547440${String(seq).padStart(5, '0')}`;
    const customer = `2547450${String(seq).padStart(5, '0')}`;
    const { id: merchantId } = await db.insertInto('merchants').values({ phone: merchant, business_name: `Review Shop ${seq}` }).returning('id').executeTakeFirstOrThrow();
    const invoice = await db
      .insertInto('invoices')
      .values({ merchant_id: merchantId, number: 1, customer_phone: customer, amount: '100', description: 'review', status: 'sent', due_date: '2026-12-31' })
      .returning('id')
      .executeTakeFirstOrThrow();
    const checkout = `ws_CO_review_${seq}`;
    const attempt = await db
      .insertInto('payment_attempts')
      .values({
        invoice_id: invoice.id,
        checkout_request_id: checkout,
        merchant_request_id: `mr_${checkout}`,
        amount: '100',
        phone: customer,
        callback_token_hash: sha256Hex(`review-token-${seq}-0123456789abcdef`),
        push_started_at: values.createdAt,
        created_at: values.createdAt,
        last_queried_at: values.lastQueriedAt ?? null,
        ...(values.queryCount === undefined ? {} : { query_count: values.queryCount }),
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    return { invoiceId: invoice.id, attemptId: attempt.id, checkout, merchant };
  }
  async function onlyPending(attemptIds: string[]) {
    await f.database.handle.db.updateTable('payment_attempts').set({ status: 'failed' }).where('status', '=', 'pending').where('id', 'not in', attemptIds).execute();
  }
  const attemptRow = (id: string) => f.database.handle.db.selectFrom('payment_attempts').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  const invoiceRow = (id: string) => f.database.handle.db.selectFrom('invoices').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  function payments(daraja: DarajaClient) {
    return createPayments({ db: f.database.handle.db, jobs: f.deps.jobs, outbox: f.deps.outbox, daraja, config: f.deps.config, metrics: f.deps.metrics, logger: f.deps.logger, now });
  }
  const down = () => new TransportError({ provider: 'mpesa', reason: 'timeout', message: 'ECONNABORTED' });

  // README: "only after a day with no answer is it expired". The pause once computed
  // power(2, query_count - 1)::int before capping it: out of range at 32 queries (about 13.5 h
  // into an outage), and from then on the claim statement failed on every run.
  test('a day-long M-PESA outage: every run keeps working and the attempt is given up after a day', { timeout: 300_000 }, async () => {
    const start = clock;
    const a = await seedAttempt({ createdAt: new Date(start) });
    await onlyPending([a.attemptId]);
    let asked = 0;
    const w = payments({ configured: true, stkPush: () => Promise.reject(new Error('not used')), stkQuery: () => ((asked += 1), Promise.reject(down())) });
    let failure: string | undefined;
    let unsettledSeen = false;
    for (clock = start + 3 * 60_000 + 1_000; clock <= start + 24 * 3600_000 + 31 * 60_000; clock += 60_000) {
      try {
        await w.reconcile();
        // Past its first half hour, the operator's gauge shows it waiting on M-PESA.
        if (!unsettledSeen && clock - start > 31 * 60_000) {
          assert.match(await f.deps.metrics.registry.metrics(), /invoiceiq_payment_attempts_unsettled 1\b/);
          unsettledSeen = true;
        }
      } catch (error) {
        const row = await attemptRow(a.attemptId);
        failure = `reconcile() threw ${((clock - start) / 3600_000).toFixed(1)} h into the outage, after ${asked} queries (query_count ${row.query_count}): ${error instanceof Error ? error.message : String(error)}`;
        break;
      }
      if ((await attemptRow(a.attemptId)).status !== 'pending') break;
    }
    assert.equal(failure, undefined, failure);
    assert.match(await f.deps.metrics.registry.metrics(), /invoiceiq_payment_attempts_unsettled 0\b/, 'given up: nothing left unsettled');
    const row = await attemptRow(a.attemptId);
    assert.equal(row.status, 'expired', `still ${row.status} after a day (query_count ${row.query_count})`);
    assert.match(row.result_desc ?? '', /never answered/);
  });

  test('one attempt asked 32 times (an outage of ~14 h) stops the reconciliation of every other attempt', async () => {
    const at = clock;
    // Asked 32 times, last a minute ago: not even due (its pause is 30 minutes).
    const old = await seedAttempt({ createdAt: new Date(at - 15 * 3600_000), lastQueriedAt: new Date(at - 60_000), queryCount: 32 });
    // A fresh attempt whose callback was lost: M-PESA says it was paid.
    const fresh = await seedAttempt({ createdAt: new Date(at - 10 * 60_000) });
    await onlyPending([old.attemptId, fresh.attemptId]);
    const w = payments({
      configured: true,
      stkPush: () => Promise.reject(new Error('not used')),
      stkQuery: async (id) => {
        if (id === fresh.checkout) return { state: 'completed', resultCode: 0, resultDesc: 'The service request is processed successfully.' };
        throw down();
      },
    });
    const outcome = await w.reconcile().then(
      (totals) => ({ ok: true as const, totals }),
      (error: unknown) => ({ ok: false as const, message: error instanceof Error ? error.message : String(error) }),
    );
    assert.ok(outcome.ok, `reconcile() threw: ${outcome.ok ? '' : outcome.message}`);
    assert.equal((await attemptRow(fresh.attemptId)).status, 'succeeded', 'the paid attempt is settled by its query');
    assert.equal((await invoiceRow(fresh.invoiceId)).status, 'paid');
  });
});
