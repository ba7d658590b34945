/**
 * Findings of a second review of the payment path, each shown here (both databases; one race
 * needs two connections, so Postgres only):
 * - a push whose job waited out an outage is not sent once the prompt is stale
 *   (PUSH_STALE_AFTER_MS): reconciliation could expire its attempt while the prompt was on
 *   the phone, and nothing would ever ask about it;
 * - Daraja's own 5xx with a code proves no more than a bare 5xx: the prompt may be on the phone;
 * - Daraja's "not now" on the push job's last try ends the attempt as refused (the customer who
 *   asked is told), instead of leaving it pending, with nobody told, until reconciliation;
 * - a wrong-amount callback for a second payment keeps its "Paid twice: refund ..." result;
 * - reconciliation's "not paid yet" waits for a payment committing meanwhile (the invoice is
 *   read locked), so the merchant is not told "not paid" just before "paid";
 * - a callback whose body does not read, with a token that names an attempt, is stored as
 *   rejected for a person and accepted (it may carry the M-PESA receipt number); with any
 *   other token it is refused as forged.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sql } from 'kysely';
import type { PaymentInitiator } from '../src/db/schema.js';
import { EXPIRE_AFTER_MS, PUSH_STALE_AFTER_MS } from '../src/domain/payment.js';
import { texts } from '../src/domain/texts.js';
import { createPayments } from '../src/payments/service.js';
import type { DarajaClient } from '../src/providers/mpesa/client.js';
import { sha256Hex } from '../src/security.js';
import type { FakeDaraja } from './fakes/daraja.js';
import { waitFor, type ChannelFixture } from './helpers/channel.js';
import { mpesaSuite } from './helpers/mpesa-env.js';


let clock = new Date('2026-11-22T07:00:00.000Z').getTime();
const now = () => new Date(clock);

let f: ChannelFixture;
let daraja: FakeDaraja;
mpesaSuite(now, (fixture, fake) => {
  f = fixture;
  daraja = fake;
});

const db = () => f.database.handle.db;
let seq = 0;

/** A merchant with one sent invoice of KES 1,500 (no attempt yet). */
async function invoice() {
  seq += 1;
  const merchant = `2547561${String(seq).padStart(5, '0')}`;
  const customer = `2547562${String(seq).padStart(5, '0')}`;
  const { id: merchantId } = await db().insertInto('merchants').values({ phone: merchant, business_name: `Review Shop ${seq}` }).returning('id').executeTakeFirstOrThrow();
  const row = await db()
    .insertInto('invoices')
    .values({ merchant_id: merchantId, number: 1, customer_phone: customer, amount: '1500', description: 'flour', status: 'sent', due_date: '2026-12-31' })
    .returning(['id', 'number'])
    .executeTakeFirstOrThrow();
  return { merchant, customer, id: row.id, number: row.number };
}

type Invoice = Awaited<ReturnType<typeof invoice>>;

/** An attempt for `inv` asked for `ageMs` ago by `initiatedBy`; pushed (with a CheckoutRequestID) or not. */
async function attempt(inv: Invoice, ageMs: number, options: { initiatedBy?: PaymentInitiator; pushed?: boolean } = {}) {
  seq += 1;
  const token = `review2-${seq}-token-0123456789abcdefghijklmn`;
  const checkout = `ws_CO_review2_${seq}`;
  const at = new Date(clock - ageMs);
  const pushed = options.pushed ?? false;
  const { id } = await db()
    .insertInto('payment_attempts')
    .values({
      invoice_id: inv.id,
      amount: '1500',
      phone: inv.customer,
      callback_token_hash: sha256Hex(token),
      initiated_by: options.initiatedBy ?? 'customer',
      created_at: at,
      ...(pushed ? { checkout_request_id: checkout, merchant_request_id: `mr_${checkout}`, push_started_at: at } : {}),
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return { id, token, checkout };
}

const attemptRow = (id: string) => db().selectFrom('payment_attempts').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
const pushesTo = (phone: string) => daraja.pushes().filter((r) => r.body.PhoneNumber === phone).length;
async function noticesTo(phone: string): Promise<unknown[]> {
  const rows = await db().selectFrom('outbound_messages').select('content').where('recipient', '=', phone).where('kind', '=', 'notice').orderBy('created_at').execute();
  return rows.map((r) => (r.content as { message: unknown }).message);
}
async function metric(outcome: string): Promise<number> {
  const found = new RegExp(`invoiceiq_payment_attempts_total\\{outcome="${outcome}"\\} (\\d+)`).exec(await f.deps.metrics.registry.metrics());
  return found === null ? 0 : Number(found[1]);
}

/** A payments service over the fixture whose STK query answers `query`. */
function paymentsAsking(query: DarajaClient['stkQuery']) {
  const answering: DarajaClient = { ...f.deps.daraja, stkQuery: query };
  return createPayments({ db: db(), jobs: f.deps.jobs, outbox: f.deps.outbox, daraja: answering, config: f.deps.config, metrics: f.deps.metrics, logger: f.deps.logger, now });
}

describe('a push whose job waited out an outage', () => {
  test('asked for more than PUSH_STALE_AFTER_MS ago: not sent; the attempt expires, and the customer who asked is told to try again', async () => {
    const inv = await invoice();
    const stale = await attempt(inv, PUSH_STALE_AFTER_MS + 60_000);
    const before = await metric('push_stale');
    assert.equal(await f.deps.payments.push(stale.id), 'not_pending');
    assert.equal(pushesTo(inv.customer), 0, 'no prompt reached the phone');
    const row = await attemptRow(stale.id);
    assert.equal(row.status, 'expired');
    assert.match(row.result_desc ?? '', /^not prompted: asked for more than 10 minutes/);
    await waitFor(async () => (await noticesTo(inv.customer)).length === 1, 5_000, 'the customer told');
    assert.deepEqual((await noticesTo(inv.customer))[0], texts.en.promptNotStarted(inv.number, 'refused', inv.id));
    assert.equal(await metric('push_stale'), before + 1);
    // Its job runs again (a retry): nothing more happens.
    assert.equal(await f.deps.payments.push(stale.id), 'not_pending');
    assert.equal((await noticesTo(inv.customer)).length, 1);
    // A new request (PAY) is free to prompt at once: nothing is on the phone.
    const fresh = await attempt(inv, PUSH_STALE_AFTER_MS - 60_000);
    assert.equal(await f.deps.payments.push(fresh.id), 'pushed');
    assert.equal(pushesTo(inv.customer), 1);
  });

  test("a stale prompt the invoice's sending or a merchant's reminder asked for expires without a notice (the invoice's Pay button stays with the customer)", async () => {
    for (const initiatedBy of ['invoice_sent', 'merchant_remind'] as const) {
      const inv = await invoice();
      const stale = await attempt(inv, PUSH_STALE_AFTER_MS + 1_000, { initiatedBy });
      assert.equal(await f.deps.payments.push(stale.id), 'not_pending');
      assert.equal((await attemptRow(stale.id)).status, 'expired');
      assert.equal(pushesTo(inv.customer), 0);
      assert.deepEqual(await noticesTo(inv.customer), []);
      assert.deepEqual(await noticesTo(inv.merchant), []);
    }
  });

  test('the margin holds: a prompt sent just before it goes stale is never expired by reconciliation while M-PESA may still answer', () => {
    // The longest push (MPESA_TIMEOUT_MS is at most a minute) ends long before reconciliation
    // expires an attempt without a CheckoutRequestID.
    assert.ok(PUSH_STALE_AFTER_MS + 60_000 < EXPIRE_AFTER_MS / 2);
  });
});

describe("Daraja's answer to a push", () => {
  test('its own 5xx with a code (500.003.1001 Internal Server Error) proves nothing: unclear (push_unclear, which holds off a new prompt for 2 minutes)', async () => {
    const inv = await invoice();
    const a = await attempt(inv, 0);
    daraja.queuePush({ kind: 'error', status: 500, code: '500.003.1001', message: 'Internal Server Error' });
    assert.equal(await f.deps.payments.push(a.id), 'failed');
    const row = await attemptRow(a.id);
    assert.deepEqual([row.status, row.push_unclear], ['failed', true]);
    assert.match(row.result_desc ?? '', /^no answer to the push/);
    // Told what to do either way, not that the prompt failed.
    await waitFor(async () => (await noticesTo(inv.customer)).length === 1, 5_000, 'the customer told');
    assert.deepEqual((await noticesTo(inv.customer))[0], texts.en.promptNotStarted(inv.number, 'unclear', inv.id));
  });

  test('a 4xx with a code is a refusal: nothing reached the phone', async () => {
    const inv = await invoice();
    const a = await attempt(inv, 0);
    daraja.queuePush({ kind: 'error', status: 400, code: '400.002.02', message: 'Bad Request - Invalid PhoneNumber' });
    assert.equal(await f.deps.payments.push(a.id), 'failed');
    const row = await attemptRow(a.id);
    assert.deepEqual([row.status, row.push_unclear], ['failed', false]);
    assert.match(row.result_desc ?? '', /^push not accepted/);
  });
});

describe("Daraja's \"not now\" (spike arrest) on the push job's tries", () => {
  test('before the last try: thrown for the job to try again, the attempt pending and free to push; on the last: a refusal, and the customer who asked is told to try again', async () => {
    const inv = await invoice();
    const a = await attempt(inv, 0);
    const job = f.deps.payments.jobs.find((j) => j.name === 'stk-push')!;
    const context = (retryCount: number) => ({ logger: f.deps.logger, jobId: `job-${retryCount}`, retryCount });
    for (let retryCount = 0; retryCount < (job.retryLimit ?? 0); retryCount += 1) {
      daraja.queuePush({ kind: 'error', status: 500, code: '500.003.02', message: 'Spike arrest' });
      await assert.rejects(job.handle({ attemptId: a.id }, context(retryCount)), /Spike arrest/);
      const row = await attemptRow(a.id);
      assert.deepEqual([row.status, row.push_started_at], ['pending', null], `after try ${retryCount + 1}`);
    }
    daraja.queuePush({ kind: 'error', status: 500, code: '500.003.02', message: 'Spike arrest' });
    await job.handle({ attemptId: a.id }, context(job.retryLimit ?? 0));
    const row = await attemptRow(a.id);
    assert.deepEqual([row.status, row.push_unclear], ['failed', false], 'nothing reached the phone: a new prompt may start at once');
    assert.match(row.result_desc ?? '', /^push not accepted/);
    assert.equal(pushesTo(inv.customer), (job.retryLimit ?? 0) + 1);
    await waitFor(async () => (await noticesTo(inv.customer)).length === 1, 5_000, 'the customer told');
    assert.deepEqual((await noticesTo(inv.customer))[0], texts.en.promptNotStarted(inv.number, 'refused', inv.id));
  });
});

describe('a second payment of a paid invoice', () => {
  test('a callback for another amount about it keeps its "Paid twice: refund ..." result (what the merchant reads), and adds its note', async () => {
    const inv = await invoice();
    const first = await attempt(inv, 10 * 60_000, { pushed: true });
    const second = await attempt(inv, 9 * 60_000, { pushed: true });
    // The first pays by callback; the second's payment is learnt from an STK query (no receipt).
    const payments = paymentsAsking(async (checkout) => (checkout === second.checkout ? { state: 'completed', resultCode: 0, resultDesc: 'The service request is processed successfully.' } : { state: 'pending' }));
    const paid = await payments.handleCallback(first.token, { checkoutRequestId: first.checkout, resultCode: 0, resultDesc: 'ok', amount: 1500, receipt: 'RREVIEW0001', phone: inv.customer });
    assert.equal(paid.status, 'applied');
    await payments.reconcile({ olderThanMs: 0 });
    const learnt = await attemptRow(second.id);
    assert.equal(learnt.result_desc, 'Paid twice: refund M-PESA (receipt not known yet)');
    assert.match(learnt.review_reason ?? '', /^paid_twice/);
    // Its callback comes, for another amount: recorded for review, the refund hint kept.
    const outcome = await payments.handleCallback(second.token, {
      checkoutRequestId: second.checkout,
      resultCode: 0,
      resultDesc: 'The service request is processed successfully.',
      amount: 15,
      receipt: 'RREVIEW0002',
      phone: inv.customer,
    });
    assert.equal(outcome.status, 'review');
    const after = await attemptRow(second.id);
    assert.equal(after.result_desc, 'Paid twice: refund M-PESA (receipt not known yet)');
    assert.equal(after.result_code, learnt.result_code);
    assert.match(after.review_reason ?? '', /^paid_twice.*; amount_mismatch: paid 15 receipt RREVIEW0002$/);
    assert.equal(after.mpesa_receipt, null, "another amount's receipt is not this payment's");
  });
});

describe("reconciliation's notice", () => {
  test('"not paid yet" waits for a payment of the invoice committing meanwhile, and is then not written (Postgres only)', async (t) => {
    if (f.database.kind !== 'postgres') {
      t.skip('needs two connections (TEST_DATABASE_URL)');
      return;
    }
    const inv = await invoice();
    // Its push never answered (no CheckoutRequestID), long enough ago to be expired.
    const unanswered = await attempt(inv, EXPIRE_AFTER_MS + 60_000);
    await db().updateTable('payment_attempts').set({ push_started_at: new Date(clock - EXPIRE_AFTER_MS - 60_000) }).where('id', '=', unanswered.id).execute();
    const payments = paymentsAsking(async () => ({ state: 'pending' }));
    // Another attempt's payment is being committed (its transaction holds the invoice).
    const payer = await f.database.handle.pool!.connect();
    let reconciling: Promise<unknown> | undefined;
    try {
      await payer.query('begin');
      await payer.query(`update invoices set status = 'paid', paid_at = now(), mpesa_receipt = 'RREVIEWLOCK' where id = $1`, [inv.id]);
      reconciling = payments.reconcile({ olderThanMs: 0 });
      // Reconciliation reaches the invoice and waits for the payment.
      await waitFor(
        async () => {
          const { rows } = await payer.query<{ n: string }>(`select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`);
          return Number(rows[0]!.n) > 0;
        },
        5_000,
        'reconciliation waits for the invoice',
      );
      await payer.query('commit');
    } finally {
      payer.release();
    }
    assert.deepEqual(await reconciling, { queried: 0, applied: 0, expired: 1 });
    assert.equal((await attemptRow(unanswered.id)).status, 'expired');
    assert.deepEqual(await noticesTo(inv.merchant), [], 'no "not paid yet" beside "paid"');
  });

  test('with no payment in the way, the merchant is told the invoice is not paid yet', async () => {
    const inv = await invoice();
    const unanswered = await attempt(inv, EXPIRE_AFTER_MS + 60_000);
    const payments = paymentsAsking(async () => ({ state: 'pending' }));
    assert.deepEqual(await payments.reconcile({ olderThanMs: 0 }), { queried: 0, applied: 0, expired: 1 });
    assert.equal((await attemptRow(unanswered.id)).status, 'expired');
    await waitFor(async () => (await noticesTo(inv.merchant)).length === 1, 5_000, 'the merchant told');
    assert.deepEqual((await noticesTo(inv.merchant))[0], texts.en.paymentFailedToMerchant(inv.number, 'no_answer'));
  });
});

describe('a callback whose body does not read', () => {
  const post = (token: string, body: string) => f.app.request(`/payments/stk/callback/${token}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  const storedFor = (attemptId: string) =>
    db()
      .selectFrom('inbound_events')
      .select(['status', 'payload', 'last_error'])
      .where('source', '=', 'mpesa_callback')
      .where(sql<boolean>`payload ->> 'attemptId' = ${attemptId}`)
      .execute();

  test("with its attempt's token: stored as rejected for a person (what it said, whose it is), accepted, and nothing changed; sent again, stored once", async () => {
    const inv = await invoice();
    const a = await attempt(inv, 60_000, { pushed: true });
    // Safaricom's shape, with a Value no schema expects (an object): the receipt is in there.
    const body = JSON.stringify({
      Body: { stkCallback: { MerchantRequestID: 'mr', CheckoutRequestID: a.checkout, ResultCode: 0, ResultDesc: 'ok', CallbackMetadata: { Item: [{ Name: 'MpesaReceiptNumber', Value: { odd: 'RUNREAD001' } }] } } },
    });
    for (let i = 0; i < 2; i += 1) {
      const answer = await post(a.token, body);
      assert.equal(answer.status, 200);
      assert.deepEqual(await answer.json(), { ResultCode: 0, ResultDesc: 'Accepted' });
    }
    const stored = await storedFor(a.id);
    assert.equal(stored.length, 1, 'stored once');
    assert.equal(stored[0]!.status, 'rejected');
    assert.equal((stored[0]!.payload as { raw: string }).raw, body, 'what it said, for a person');
    assert.match(stored[0]!.last_error ?? '', /^not an STK callback/);
    assert.equal((await attemptRow(a.id)).status, 'pending');
    assert.equal((await db().selectFrom('invoices').select('status').where('id', '=', inv.id).executeTakeFirstOrThrow()).status, 'sent');
    assert.match(await f.deps.metrics.registry.metrics(), /invoiceiq_inbound_events_total\{source="mpesa_callback",outcome="rejected"\} [1-9]/);
  });

  test('not even JSON, with its attempt\'s token: stored as rejected too', async () => {
    const inv = await invoice();
    const a = await attempt(inv, 60_000, { pushed: true });
    assert.equal((await post(a.token, '{"Body": {"stkCallback": ')).status, 200);
    const stored = await storedFor(a.id);
    assert.deepEqual([stored.length, stored[0]?.status, stored[0]?.last_error], [1, 'rejected', 'the body is not valid JSON']);
  });

  test('with a token that names no attempt: refused as forged (404), nothing stored', async () => {
    const before = await db().selectFrom('inbound_events').select(sql<string>`count(*)`.as('n')).where('source', '=', 'mpesa_callback').executeTakeFirstOrThrow();
    assert.equal((await post('forged-token-0000000000000000000000000000000', '{"Body": {}}')).status, 404);
    assert.equal((await post('forged-token-0000000000000000000000000000000', 'not json')).status, 404);
    const after = await db().selectFrom('inbound_events').select(sql<string>`count(*)`.as('n')).where('source', '=', 'mpesa_callback').executeTakeFirstOrThrow();
    assert.equal(after.n, before.n);
  });
});
