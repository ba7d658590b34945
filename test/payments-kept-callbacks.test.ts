/**
 * STK callbacks the database refuses for a while (src/payments/service.ts keepOrFail,
 * retryCallback): Safaricom sends a callback "twice, late, or never", and only the callback
 * carries the M-PESA receipt number (the STK query has none). So one that cannot be applied
 * is kept (its inbound event, status retrying, with a retry job) and answered as accepted;
 * the retry job, or the same callback sent again, applies it through the same path, once.
 * Faults are real: a trigger makes the database refuse a statement. Real route, both databases.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { sha256Hex } from '../src/security.js';
import { callbackSuite, paidBody, type SeededAttempt } from './helpers/callback-groups.js';
import { startChannelFixture, waitFor, type ChannelFixture } from './helpers/channel.js';

let f: ChannelFixture;
before(async () => {
  f = await startChannelFixture({ env: { MPESA_CALLBACK_URL: 'https://invoiceiq.example/payments/stk/callback', INBOUND_MAX_ATTEMPTS: '3' } });
});
after(async () => {
  await f.close();
});

const { callback, invoice } = callbackSuite(() => f);
const db = () => f.database.handle.db;
let seq = 0;

/** One merchant with one sent invoice of KES 100 and a pending attempt whose token is known. */
async function seed(): Promise<SeededAttempt & { merchant: string }> {
  seq += 1;
  const merchant = `2547551${String(seq).padStart(5, '0')}`;
  const customer = `2547661${String(seq).padStart(5, '0')}`;
  const { id: merchantId } = await db().insertInto('merchants').values({ phone: merchant, business_name: `Kept Shop ${seq}` }).returning('id').executeTakeFirstOrThrow();
  const { id: invoiceId } = await db()
    .insertInto('invoices')
    .values({ merchant_id: merchantId, number: 1, customer_phone: customer, amount: '100', description: 'kept', status: 'sent', due_date: '2026-12-31' })
    .returning('id')
    .executeTakeFirstOrThrow();
  const token = `kept-${seq}-token-0123456789abcdef0123456789`;
  const checkout = `ws_CO_kept_${seq}`;
  const { id: attemptId } = await db()
    .insertInto('payment_attempts')
    .values({ invoice_id: invoiceId, checkout_request_id: checkout, merchant_request_id: `mr_${checkout}`, amount: '100', phone: customer, callback_token_hash: sha256Hex(token), push_started_at: new Date() })
    .returning('id')
    .executeTakeFirstOrThrow();
  return { token, checkout, invoiceId, attemptId, customer, merchant };
}

/** The database refuses the paid event of this receipt (inside the callback's transaction). */
async function refuseReceipt(receipt: string): Promise<void> {
  await sql`create or replace function refuse_paid_event() returns trigger language plpgsql as $$
    begin
      if new.data::jsonb ->> 'receipt' = ${sql.lit(receipt)} then raise exception 'refused for the test'; end if;
      return new;
    end $$`.execute(db());
  await sql`create trigger refuse_paid_event before insert on invoice_events for each row execute function refuse_paid_event()`.execute(db());
}
async function allowReceipts(): Promise<void> {
  await sql`drop trigger if exists refuse_paid_event on invoice_events`.execute(db());
  await sql`drop function if exists refuse_paid_event()`.execute(db());
}

/** The callback paying `a` with `receipt`, sent while the database refuses it: accepted, and kept. Returns the kept record's id. */
async function keptCallback(a: SeededAttempt, receipt: string): Promise<string> {
  await refuseReceipt(receipt);
  try {
    assert.equal((await callback(a.token, paidBody(a, receipt))).status, 200);
  } finally {
    await allowReceipts();
  }
  const kept = await keptRow(a, receipt);
  assert.equal(kept?.status, 'retrying');
  return kept!.id;
}

const keptRow = (a: SeededAttempt, receipt: string) =>
  db().selectFrom('inbound_events').selectAll().where('source', '=', 'mpesa_callback').where('external_key', '=', `${a.checkout}:0:${receipt}:100`).executeTakeFirst();
const retryJobs = async (eventId: string) =>
  Number((await f.database.handle.pool.query(`select count(*)::int as n from pgboss.job where name = 'retry-stk-callback' and data->>'eventId' = $1 and state = 'created'`, [eventId])).rows[0].n);
/** The retry jobs of this event are dropped: the test drives the retries itself (the fixture's workers would race it). */
const dropRetryJobs = (eventId: string) => f.database.handle.pool.query(`delete from pgboss.job where name = 'retry-stk-callback' and data->>'eventId' = $1`, [eventId]);
const paidEvents = async (invoiceId: string) =>
  Number((await db().selectFrom('invoice_events').select((eb) => eb.fn.countAll<string>().as('n')).where('invoice_id', '=', invoiceId).where('type', '=', 'paid').executeTakeFirstOrThrow()).n);
const receiptsTo = (phone: string) => db().selectFrom('outbound_messages').select(['kind', 'content']).where('recipient', '=', phone).where('kind', '=', 'receipt').execute();

describe('STK callbacks kept for a retry', () => {
  test('a callback the database refuses is accepted and kept (token hashed, never stored), with its retry job; the invoice is not paid yet', async () => {
    const a = await seed();
    await refuseReceipt('RKEPT00001');
    try {
      const answer = await callback(a.token, paidBody(a, 'RKEPT00001'));
      assert.equal(answer.status, 200);
      assert.deepEqual(await answer.json(), { ResultCode: 0, ResultDesc: 'Accepted' });
      const kept = await keptRow(a, 'RKEPT00001');
      assert.ok(kept !== undefined, 'kept as an inbound event');
      assert.equal(kept.status, 'retrying');
      assert.match(kept.last_error ?? '', /refused for the test/);
      const payload = kept.payload as { tokenHash: string; result: { receipt: string; amount: number } };
      assert.equal(payload.tokenHash, sha256Hex(a.token));
      assert.equal(payload.result.receipt, 'RKEPT00001');
      assert.equal(payload.result.amount, 100);
      assert.doesNotMatch(JSON.stringify(kept), new RegExp(a.token), 'the URL token itself is not stored');
      assert.equal(await retryJobs(kept.id), 1, 'a retry job is queued');
      assert.deepEqual(await invoice(a.invoiceId), { status: 'sent', mpesa_receipt: null });
      assert.equal((await db().selectFrom('payment_attempts').select('status').where('id', '=', a.attemptId).executeTakeFirstOrThrow()).status, 'pending');
      assert.match(await f.deps.metrics.registry.metrics(), /invoiceiq_inbound_events_total\{source="mpesa_callback",outcome="retrying"\} [1-9]/);
    } finally {
      await allowReceipts();
    }
  });

  test('its retry, while the fault lasts, waits longer; once the fault is gone it pays the invoice with the M-PESA receipt number, and receipts go to both sides, once', async () => {
    const a = await seed();
    await refuseReceipt('RKEPT00002');
    let eventId: string;
    try {
      assert.equal((await callback(a.token, paidBody(a, 'RKEPT00002'))).status, 200);
      eventId = (await keptRow(a, 'RKEPT00002'))!.id;
      await dropRetryJobs(eventId);
      assert.equal(await f.deps.payments.retryCallback(eventId), 'retrying');
      const row = (await keptRow(a, 'RKEPT00002'))!;
      assert.equal(row.status, 'retrying');
      assert.ok(row.attempts >= 2, `tries counted: ${row.attempts}`);
      assert.equal(await retryJobs(eventId), 1, 'the next try is queued');
      await dropRetryJobs(eventId);
    } finally {
      await allowReceipts();
    }
    assert.equal(await f.deps.payments.retryCallback(eventId), 'processed');
    assert.deepEqual(await invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00002' });
    assert.equal((await keptRow(a, 'RKEPT00002'))!.status, 'processed');
    await f.deps.outbox.idle();
    const toCustomer = await receiptsTo(a.customer);
    const toMerchant = await receiptsTo(a.merchant);
    assert.equal(toCustomer.length, 1);
    assert.equal(toMerchant.length, 1);
    assert.match(JSON.stringify(toCustomer[0]!.content), /RKEPT00002/);
    assert.match(JSON.stringify(toMerchant[0]!.content), /RKEPT00002/);
    // Again (a job retried by the queue, the sweep): nothing more.
    assert.equal(await f.deps.payments.retryCallback(eventId), 'not_pending');
    // And the same callback sent again by Safaricom later: a duplicate.
    assert.equal((await callback(a.token, paidBody(a, 'RKEPT00002'))).status, 200);
    assert.equal(await paidEvents(a.invoiceId), 1);
    assert.equal((await receiptsTo(a.customer)).length, 1);
  });

  test('the retry job queued with it applies it by itself once the fault is gone', async () => {
    const a = await seed();
    const kept = { id: await keptCallback(a, 'RKEPT00003') };
    // The fixture's job workers run it (first try after 1-2 s; one that ran before the fault
    // was gone waits 2-4 s more).
    await waitFor(async () => (await invoice(a.invoiceId)).status === 'paid', 15_000, 'the retry job');
    assert.deepEqual(await invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00003' });
    assert.equal((await keptRow(a, 'RKEPT00003'))!.status, 'processed');
    assert.equal(await f.deps.payments.retryCallback(kept.id), 'not_pending');
    assert.equal(await paidEvents(a.invoiceId), 1);
  });

  test('sent again by Safaricom while kept, it is applied at once: its kept record is taken over and the retry then finds nothing to do', async () => {
    const a = await seed();
    const kept = { id: await keptCallback(a, 'RKEPT00004') };
    await dropRetryJobs(kept.id);
    // Twenty copies at once: one paid transition.
    const answers = await Promise.all(Array.from({ length: 20 }, () => callback(a.token, paidBody(a, 'RKEPT00004'))));
    assert.deepEqual(new Set(answers.map((r) => r.status)), new Set([200]));
    assert.deepEqual(await invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00004' });
    const row = (await keptRow(a, 'RKEPT00004'))!;
    assert.equal(row.status, 'processed');
    assert.equal(row.last_error, null);
    assert.equal((row.payload as Record<string, unknown>).tokenHash, undefined, 'the record now holds what the callback said, as any processed one');
    assert.equal(await f.deps.payments.retryCallback(kept.id), 'not_pending');
    assert.equal(await paidEvents(a.invoiceId), 1);
    await f.deps.outbox.idle();
    assert.equal((await receiptsTo(a.customer)).length, 1);
  });

  test('one that keeps failing is parked as dead after INBOUND_MAX_ATTEMPTS tries (with a metric); a copy Safaricom sends later still pays', async () => {
    const a = await seed();
    await refuseReceipt('RKEPT00005');
    let eventId: string;
    try {
      assert.equal((await callback(a.token, paidBody(a, 'RKEPT00005'))).status, 200);
      eventId = (await keptRow(a, 'RKEPT00005'))!.id;
      await dropRetryJobs(eventId);
      // INBOUND_MAX_ATTEMPTS is 3 here: the first try was the callback itself.
      assert.equal(await f.deps.payments.retryCallback(eventId), 'retrying');
      await dropRetryJobs(eventId);
      assert.equal(await f.deps.payments.retryCallback(eventId), 'dead');
      assert.equal(await retryJobs(eventId), 0, 'no further try is queued');
      assert.equal((await keptRow(a, 'RKEPT00005'))!.status, 'dead');
      assert.equal(await f.deps.payments.retryCallback(eventId), 'not_pending');
      assert.match(await f.deps.metrics.registry.metrics(), /invoiceiq_inbound_events_total\{source="mpesa_callback",outcome="dead"\} [1-9]/);
    } finally {
      await allowReceipts();
    }
    assert.deepEqual(await invoice(a.invoiceId), { status: 'sent', mpesa_receipt: null });
    assert.equal((await callback(a.token, paidBody(a, 'RKEPT00005'))).status, 200);
    assert.deepEqual(await invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00005' });
    assert.equal((await keptRow(a, 'RKEPT00005'))!.status, 'processed');
  });

  test('a kept callback whose attempt no longer matches is parked as dead at its retry, not tried again', async () => {
    const a = await seed();
    const kept = { id: await keptCallback(a, 'RKEPT00006') };
    await dropRetryJobs(kept.id);
    // The attempt now names another CheckoutRequestID (as a forged callback's would not match).
    await db().updateTable('payment_attempts').set({ checkout_request_id: 'ws_CO_another' }).where('id', '=', a.attemptId).execute();
    assert.equal(await f.deps.payments.retryCallback(kept.id), 'dead');
    const row = (await keptRow(a, 'RKEPT00006'))!;
    assert.equal(row.status, 'dead');
    assert.match(row.last_error ?? '', /rejected: checkout_mismatch/);
    assert.equal(await retryJobs(kept.id), 0);
    assert.deepEqual(await invoice(a.invoiceId), { status: 'sent', mpesa_receipt: null });
  });

  test('a callback that can be neither applied nor kept gets a 500 (Safaricom may send it again) and leaves nothing', async () => {
    const a = await seed();
    await refuseReceipt('RKEPT00007');
    await sql`create function refuse_keeping() returns trigger language plpgsql as $$
      begin
        if new.status = 'retrying' and new.external_key like ${sql.lit(`${a.checkout}:%`)} then raise exception 'refused to keep it'; end if;
        return new;
      end $$`.execute(db());
    await sql`create trigger refuse_keeping before insert on inbound_events for each row execute function refuse_keeping()`.execute(db());
    let status: number;
    try {
      status = (await callback(a.token, paidBody(a, 'RKEPT00007'))).status;
    } finally {
      await sql`drop trigger refuse_keeping on inbound_events`.execute(db());
      await sql`drop function refuse_keeping()`.execute(db());
      await allowReceipts();
    }
    assert.equal(status, 500);
    assert.equal(await keptRow(a, 'RKEPT00007'), undefined);
    assert.deepEqual(await invoice(a.invoiceId), { status: 'sent', mpesa_receipt: null });
    // Sent again, now that the database takes it: paid.
    assert.equal((await callback(a.token, paidBody(a, 'RKEPT00007'))).status, 200);
    assert.deepEqual(await invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00007' });
  });

  test('the inbound retry sweep queues a stuck kept callback on its own retry job, not the WhatsApp one', async () => {
    const a = await seed();
    const kept = { id: await keptCallback(a, 'RKEPT00008') };
    // Its job is gone and it has waited three hours.
    await dropRetryJobs(kept.id);
    await db().updateTable('inbound_events').set({ updated_at: sql`now() - interval '3 hours'` }).where('id', '=', kept.id).execute();
    await f.deps.inbound.sweepRetries();
    const queued = await f.database.handle.pool.query(`select name from pgboss.job where data->>'eventId' = $1`, [kept.id]);
    assert.deepEqual(queued.rows.map((r: { name: string }) => r.name), ['retry-stk-callback']);
    await waitFor(async () => (await invoice(a.invoiceId)).status === 'paid', 15_000, 'the queued retry job');
    assert.deepEqual(await invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00008' });
  });
});
