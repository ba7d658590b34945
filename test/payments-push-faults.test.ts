/**
 * The STK push through database faults, and reconciliation that counts from the push (each
 * test but the AccountReference one failed on the code before its fix): what Daraja answered
 * (a CheckoutRequestID, a "not now") is written through a database blip instead of stranding
 * the attempt; the invoice's number comes with the claim; an attempt whose push started late is
 * queried, and expired, by the age of its prompt; a success without an Amount is told to the
 * merchant as an unknown amount. The real service on both databases (TEST_DATABASE_URL set:
 * Postgres; unset: PGlite) against the fake Daraja on 127.0.0.1; faults are triggers the tests
 * install and remove.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { sql } from 'kysely';
import type { InvoiceStatus } from '../src/db/schema.js';
import { texts } from '../src/domain/texts.js';
import { createPayments, STOP_PATIENCE_MS, type PaymentsDeps } from '../src/payments/service.js';
import { ProviderError } from '../src/providers/errors.js';
import { sha256Hex } from '../src/security.js';
import { callbackBody, type FakeDaraja } from './fakes/daraja.js';
import type { ChannelFixture } from './helpers/channel.js';
import { MPESA_TEST, mpesaSuite } from './helpers/mpesa-env.js';

let clock = new Date('2026-11-22T07:00:00.000Z').getTime();
const now = () => new Date(clock);

let f: ChannelFixture;
let daraja: FakeDaraja;
mpesaSuite(now, (fixture, fake) => {
  f = fixture;
  daraja = fake;
});

const db = () => f.database.handle.db;
/** The service over the fixture's database, real Daraja client (to the fake) and outbox; jobs are run by the test calling push itself. */
const payments = (options: Pick<PaymentsDeps, 'pushWritePatienceMs'> = {}) =>
  createPayments({ db: db(), jobs: f.deps.jobs, outbox: f.deps.outbox, daraja: f.deps.daraja, config: f.deps.config, metrics: f.deps.metrics, logger: f.deps.logger, now, ...options });

let seq = 0;
/** A merchant (speaking `language`) with one invoice (KES 1500) and one pending attempt not pushed yet, asked for at `createdAt` (default now). */
async function seed(options: { number?: number; createdAt?: Date; invoiceStatus?: InvoiceStatus; language?: 'en' | 'sw' } = {}) {
  seq += 1;
  const merchant = `2547510${String(seq).padStart(5, '0')}`;
  const customer = `2547520${String(seq).padStart(5, '0')}`;
  const { id: merchantId } = await db().insertInto('merchants').values({ phone: merchant, business_name: `Faults Duka ${seq}` }).returning('id').executeTakeFirstOrThrow();
  if (options.language !== undefined) {
    await db().insertInto('conversations').values({ phone: merchant, state: sql`'{"version":0}'::jsonb`, language: options.language }).execute();
  }
  const invoice = await db()
    .insertInto('invoices')
    .values({ merchant_id: merchantId, number: options.number ?? 1, customer_phone: customer, amount: '1500', description: 'flour', status: options.invoiceStatus ?? 'sent', due_date: '2026-12-31' })
    .returning(['id', 'number'])
    .executeTakeFirstOrThrow();
  const attempt = await addAttempt(invoice.id, customer, options.createdAt ?? now());
  return { merchant, customer, invoice, attemptId: attempt };
}
async function addAttempt(invoiceId: string, phone: string, createdAt: Date): Promise<string> {
  const row = await db()
    .insertInto('payment_attempts')
    .values({ invoice_id: invoiceId, amount: '1500', phone, callback_token_hash: sha256Hex(randomBytes(32).toString('hex')), initiated_by: 'customer', created_at: createdAt })
    .returning('id')
    .executeTakeFirstOrThrow();
  return row.id;
}
const attemptRow = (id: string) => db().selectFrom('payment_attempts').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
const invoiceRow = (id: string) => db().selectFrom('invoices').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
/** The fake answers queries in order, whoever asks: only these attempts are left pending. */
async function onlyPending(...ids: string[]) {
  await db().updateTable('payment_attempts').set({ status: 'failed' }).where('status', '=', 'pending').where('id', 'not in', ids).execute();
}
const queriesOf = (checkout: string) => daraja.queries().filter((r) => r.body.CheckoutRequestID === checkout);
const pushesTo = (phone: string) => daraja.pushes().filter((r) => r.body.PhoneNumber === phone);

/**
 * Makes the first `times` updates of payment_attempts that `when` picks (a plpgsql condition on
 * `old` and `new`) fail, as a database blip would. Returns what removes the fault.
 */
async function refuseAttemptUpdates(when: string, times: number): Promise<() => Promise<void>> {
  await sql.raw('create sequence push_faults_seq').execute(db());
  await sql
    .raw(
      `create function push_faults_refuse() returns trigger language plpgsql as $$
      begin
        if ${when} then
          if nextval('push_faults_seq') <= ${times} then raise exception 'refused by the test'; end if;
        end if;
        return new;
      end $$`,
    )
    .execute(db());
  await sql.raw('create trigger push_faults_refuse before update on payment_attempts for each row execute function push_faults_refuse()').execute(db());
  return async () => {
    await sql.raw('drop trigger if exists push_faults_refuse on payment_attempts').execute(db());
    await sql.raw('drop function if exists push_faults_refuse()').execute(db());
    await sql.raw('drop sequence if exists push_faults_seq').execute(db());
  };
}
/**
 * A seeded attempt whose push Daraja accepts (CheckoutRequestID `ws_CO_faults_<tag>_<seq>`)
 * while the write recording that ID is refused `times` times; `restore` removes the fault.
 */
async function acceptedButRecordRefused(tag: string, times: number) {
  const s = await seed();
  await onlyPending(s.attemptId);
  const checkout = `ws_CO_faults_${tag}_${seq}`;
  daraja.queuePush({ kind: 'ok', checkoutRequestId: checkout });
  const restore = await refuseAttemptUpdates(`new.id = '${s.attemptId}' and new.checkout_request_id is not null`, times);
  return { s, checkout, restore };
}

/** The log lines about one attempt. */
const linesAbout = (attemptId: string) => f.logs.lines.filter((line) => line.attempt_id === attemptId);

describe('the push: what Daraja answered is written through a database blip', () => {
  test('an accepted push whose CheckoutRequestID update fails twice: recorded on a later try, then reconciliation asks M-PESA about it and applies the answer', async () => {
    const s = await seed();
    await onlyPending(s.attemptId);
    const checkout = `ws_CO_faults_named_${seq}`;
    daraja.queuePush({ kind: 'ok', checkoutRequestId: checkout, merchantRequestId: `mr_${checkout}` });
    const restore = await refuseAttemptUpdates(`new.id = '${s.attemptId}' and new.checkout_request_id is not null and old.checkout_request_id is null`, 2);
    let outcome: string;
    try {
      outcome = await payments({ pushWritePatienceMs: 20_000 }).push(s.attemptId);
    } finally {
      await restore();
    }
    assert.equal(outcome, 'pushed');
    assert.equal(pushesTo(s.customer).length, 1, 'one prompt');
    const row = await attemptRow(s.attemptId);
    assert.deepEqual([row.status, row.checkout_request_id, row.merchant_request_id], ['pending', checkout, `mr_${checkout}`]);
    const refusals = linesAbout(s.attemptId).filter((line) => /database refused; trying again/.test(line.message));
    assert.equal(refusals.length, 2, 'each failure logged');
    const logged = JSON.stringify(linesAbout(s.attemptId));
    for (const phone of [s.customer, s.merchant]) assert.ok(!logged.includes(phone), `a phone number in the logs: ${logged}`);

    // The callback is lost; 3 minutes after the push M-PESA is asked, and says it was paid.
    clock += 3 * 60_000 + 1_000;
    daraja.queueQuery({ kind: 'result', resultCode: '0', resultDesc: 'The service request is processed successfully.' });
    const totals = await payments().reconcile();
    assert.equal(queriesOf(checkout).length, 1, 'the STK query asked about its CheckoutRequestID');
    assert.equal(totals.applied, 1);
    assert.equal((await attemptRow(s.attemptId)).status, 'succeeded');
    assert.equal((await invoiceRow(s.invoice.id)).status, 'paid');
  });

  test("Daraja's \"not now\" (spike arrest) whose release fails twice: released on a later try, and the job's retry sends the prompt", async () => {
    const s = await seed();
    daraja.queuePush({ kind: 'error', status: 500, code: '500.003.02', message: 'Spike arrest violation' });
    const restore = await refuseAttemptUpdates(`new.id = '${s.attemptId}' and new.push_started_at is null and old.push_started_at is not null`, 2);
    const w = payments({ pushWritePatienceMs: 20_000 });
    try {
      // Thrown for the job to try again: Daraja's refusal, not the database's.
      await assert.rejects(w.push(s.attemptId), (error) => error instanceof ProviderError && error.code === '500.003.02');
    } finally {
      await restore();
    }
    assert.equal((await attemptRow(s.attemptId)).push_started_at, null, 'released for the retry');
    assert.equal(linesAbout(s.attemptId).filter((line) => /database refused; trying again/.test(line.message)).length, 2);
    // The job's retry.
    clock += 20_000;
    assert.equal(await w.push(s.attemptId), 'pushed');
    assert.equal(pushesTo(s.customer).length, 2, 'refused once, then the prompt');
    const row = await attemptRow(s.attemptId);
    assert.equal(row.status, 'pending');
    assert.notEqual(row.checkout_request_id, null);
  });

  test("the claim brings the invoice's number: the prompt's AccountReference is the invoice's; a claim refused as before sends nothing", async () => {
    const w = payments();
    const s = await seed({ number: 42 });
    assert.equal(await w.push(s.attemptId), 'pushed');
    const [prompt] = pushesTo(s.customer);
    assert.equal(prompt?.body.AccountReference, 'INV-0042');
    assert.equal(prompt?.body.Amount, 1500);

    // Paid, cancelled, a newer attempt for the invoice, asked for too long ago: no prompt.
    const paid = await seed({ invoiceStatus: 'paid' });
    const cancelled = await seed({ invoiceStatus: 'cancelled' });
    const superseded = await seed({ createdAt: new Date(clock - 60_000) });
    await addAttempt(superseded.invoice.id, superseded.customer, now());
    const stale = await seed({ createdAt: new Date(clock - 11 * 60_000) });
    for (const s of [paid, cancelled, superseded, stale]) assert.equal(await w.push(s.attemptId), 'not_pending');
    assert.deepEqual(
      [paid, cancelled, superseded, stale].map((s) => pushesTo(s.customer).length),
      [0, 0, 0, 0],
    );
    const rows = await Promise.all([paid, cancelled, superseded, stale].map((s) => attemptRow(s.attemptId)));
    assert.deepEqual(
      rows.map((r) => [r.status, r.push_started_at]),
      rows.map(() => ['expired', null]),
    );
    assert.match(rows[3]!.result_desc ?? '', /not prompted/);
  });
});

describe('the push: when a write after Daraja answered is given up', () => {
  test('a refusal no retry can fix (the CheckoutRequestID is already another attempt\'s: 23505) is given up at once, with the CheckoutRequestID in the error log', async () => {
    const first = await seed();
    const second = await seed();
    await onlyPending(first.attemptId, second.attemptId);
    const checkout = `ws_CO_faults_dup_${seq}`;
    daraja.queuePush({ kind: 'ok', checkoutRequestId: checkout });
    assert.equal(await payments().push(first.attemptId), 'pushed');
    // Daraja answers the second push with the same CheckoutRequestID: the unique index refuses it.
    daraja.queuePush({ kind: 'ok', checkoutRequestId: checkout });
    await assert.rejects(payments({ pushWritePatienceMs: 60_000 }).push(second.attemptId), (error: { code?: string }) => error.code === '23505');
    const lines = linesAbout(second.attemptId);
    assert.equal(lines.filter((line) => /trying again/.test(line.message)).length, 0, 'not tried again');
    const given = lines.find((line) => line.level === 'error' && /never written, the database refused it in a way no retry can fix/.test(line.message));
    assert.ok(given, JSON.stringify(lines));
    assert.equal(given.tries, 1);
    assert.equal(given.checkout_request_id, checkout, 'what a person needs to ask M-PESA');
  });

  test('the service stopping: a long wait is cut short, the write tried at short waits for STOP_PATIENCE_MS more, then the error log with the CheckoutRequestID (not cut off by the kill timeout without it)', async () => {
    const { s, checkout, restore } = await acceptedButRecordRefused('stop', 1_000_000);
    const w = payments({ pushWritePatienceMs: 10 * 60_000 });
    let triesAtStop = 0;
    try {
      const pushing = w.push(s.attemptId);
      const settled = pushing.then(() => 'resolved', () => 'rejected');
      const refusals = () => linesAbout(s.attemptId).filter((line) => /database refused; trying again/.test(line.message)).length;
      while (refusals() < 3) await new Promise((resolve) => setTimeout(resolve, 20));
      // Its next wait is 1.6 s, and the ones after it longer: the stop ends them.
      triesAtStop = refusals();
      w.beginStop();
      const limit = STOP_PATIENCE_MS + 5_000;
      assert.equal(await Promise.race([settled, new Promise((resolve) => setTimeout(() => resolve('still trying'), limit))]), 'rejected', `given up within ${limit} ms of the stop`);
    } finally {
      await restore();
    }
    const given = linesAbout(s.attemptId).find((line) => line.level === 'error' && /never written, the database refused, and the service is stopping/.test(line.message));
    assert.ok(given, JSON.stringify(linesAbout(s.attemptId)));
    assert.ok(Number(given.tries) >= triesAtStop + 2, `tried again after the stop (${String(given.tries)} tries, ${triesAtStop} before it)`);
    assert.equal(given.checkout_request_id, checkout);
  });

  test('a stop during the push, then one refusal (a connection dropped by a failover): written on the next try, not given up', async () => {
    const { s, checkout, restore } = await acceptedButRecordRefused('stopblip', 1);
    const w = payments({ pushWritePatienceMs: 10 * 60_000 });
    let outcome: string;
    try {
      w.beginStop();
      outcome = await w.push(s.attemptId);
    } finally {
      await restore();
    }
    assert.equal(outcome, 'pushed');
    assert.equal((await attemptRow(s.attemptId)).checkout_request_id, checkout);
    assert.ok(!linesAbout(s.attemptId).some((line) => line.level === 'error'), JSON.stringify(linesAbout(s.attemptId)));
  });
});

describe('reconciliation counts from the push', () => {
  test('an attempt asked for 9 minutes before its push started is not queried until 3 minutes after the push', async () => {
    const s = await seed({ createdAt: new Date(clock - 9 * 60_000) });
    await onlyPending(s.attemptId);
    const checkout = `ws_CO_faults_late_${seq}`;
    daraja.queuePush({ kind: 'ok', checkoutRequestId: checkout });
    assert.equal(await payments().push(s.attemptId), 'pushed');
    const pushedAt = clock;

    // Seconds, then nearly 3 minutes, after the prompt went out: not asked (its early answers misreport).
    for (const after of [1_000, 3 * 60_000 - 1_000]) {
      clock = pushedAt + after;
      const totals = await payments().reconcile();
      assert.equal(queriesOf(checkout).length, 0, `queried ${after / 1000} s after its push`);
      assert.equal(totals.queried, 0);
      assert.equal((await attemptRow(s.attemptId)).query_count, 0);
    }
    // 3 minutes past the push: asked, and its answer applied.
    clock = pushedAt + 3 * 60_000 + 1_000;
    daraja.queueQuery({ kind: 'result', resultCode: 1032, resultDesc: 'Request cancelled by user' });
    const totals = await payments().reconcile();
    assert.equal(queriesOf(checkout).length, 1);
    assert.equal(totals.applied, 1);
    assert.equal((await attemptRow(s.attemptId)).status, 'failed');
  });

  test('expiry counts from the push too: a late push is expired 30 minutes after it, one never pushed still 30 minutes after it was asked for', async () => {
    const late = await seed({ createdAt: new Date(clock - 9 * 60_000) });
    const never = await seed({ createdAt: new Date(clock - 9 * 60_000) });
    await onlyPending(late.attemptId, never.attemptId);
    const checkout = `ws_CO_faults_expiry_${seq}`;
    daraja.queuePush({ kind: 'ok', checkoutRequestId: checkout });
    assert.equal(await payments().push(late.attemptId), 'pushed');
    const pushedAt = clock;

    // 25 minutes after the push (34 after it was asked for), M-PESA says it is still being processed.
    clock = pushedAt + 25 * 60_000;
    let totals = await payments().reconcile({ askAgainNow: true });
    assert.equal(queriesOf(checkout).length, 1);
    assert.equal((await attemptRow(late.attemptId)).status, 'pending', 'its prompt is 25 minutes old');
    assert.equal((await attemptRow(never.attemptId)).status, 'expired', 'never pushed: 34 minutes after it was asked for');
    assert.equal(totals.expired, 1);
    assert.match(await f.deps.metrics.registry.metrics(), /invoiceiq_payment_attempts_unsettled 0\b/, 'not past its usual end yet');

    clock = pushedAt + 31 * 60_000;
    totals = await payments().reconcile({ askAgainNow: true });
    assert.equal(queriesOf(checkout).length, 2);
    assert.equal(totals.expired, 1);
    assert.equal((await attemptRow(late.attemptId)).status, 'expired');
  });
});

describe('a success callback without an Amount', () => {
  for (const language of ['en', 'sw'] as const) {
    test(`${language}: the merchant is told M-PESA did not say how much was paid, never "KES 0"`, async () => {
      const s = await seed({ language });
      const checkout = `ws_CO_faults_noamount_${seq}`;
      daraja.queuePush({ kind: 'ok', checkoutRequestId: checkout, merchantRequestId: `mr_${checkout}` });
      assert.equal(await payments().push(s.attemptId), 'pushed');
      const token = String(pushesTo(s.customer)[0]!.body.CallBackURL).slice(MPESA_TEST.callbackBase.length + 1);
      // A success with no CallbackMetadata: no Amount, no receipt.
      const body = callbackBody({ checkoutRequestId: checkout, merchantRequestId: `mr_${checkout}`, resultCode: 1, resultDesc: 'x' });
      body.Body.stkCallback.ResultCode = 0;
      body.Body.stkCallback.ResultDesc = 'The service request is processed successfully.';
      const res = await f.app.request(`/payments/stk/callback/${token}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      assert.equal(res.status, 200);
      assert.equal((await invoiceRow(s.invoice.id)).status, 'sent', 'not paid: for review');
      const notices = await db().selectFrom('outbound_messages').select('content').where('recipient', '=', s.merchant).where('kind', '=', 'notice').execute();
      assert.equal(notices.length, 1);
      const message = (notices[0]!.content as { message: { body: string } }).message;
      assert.deepEqual(message, texts[language].paymentNeedsReview(s.invoice.number, 1500, null, { alreadyPaid: false }));
      assert.doesNotMatch(message.body, /KES 0\b/, message.body);
      assert.match(message.body, language === 'en' ? /M-PESA did not say how much was paid/ : /M-PESA haikutaja kiasi kilicholipwa/);
    });
  }
});
