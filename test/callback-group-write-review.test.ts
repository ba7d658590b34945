/**
 * Review of the one-statement group write (src/payments/service.ts applyResults, the outbox's
 * AlongsideWrite): a group of STK callbacks that mixes every outcome in one transaction must
 * leave exactly what the four separate statements left. Real route, attempts seeded in SQL
 * with real token hashes, both databases.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { sha256Hex } from '../src/security.js';
import { nairobiToday } from '../src/domain/invoice.js';
import { daily, dailyFromInvoices, fromInvoices, summary, type Period } from '../src/stats/summary.js';
import { callbackBody } from './fakes/daraja.js';
import { callbackSuite, declinedBody, paidBody, whileRowsHeld, type SeededAttempt } from './helpers/callback-groups.js';
import { startChannelFixture, type ChannelFixture } from './helpers/channel.js';

let f: ChannelFixture;
before(async () => {
  // Callbacks kept for a retry stay kept: no retry worker races what the tests check.
  f = await startChannelFixture({ env: { MPESA_CALLBACK_URL: 'https://invoiceiq.example/payments/stk/callback' }, idleQueues: ['retry-stk-callback'] });
});
after(async () => {
  await f.close();
});

type InvoiceStatus = 'pending' | 'sent' | 'paid' | 'failed' | 'cancelled';
type Seeded = SeededAttempt;

let merchantSeq = 0;
let tokenSeq = 0;
async function merchant(): Promise<{ id: string; phone: string }> {
  merchantSeq += 1;
  const phone = `2547570${String(merchantSeq).padStart(5, '0')}`;
  const row = await f.database.handle.db.insertInto('merchants').values({ phone, business_name: `Review Shop ${merchantSeq}` }).returning('id').executeTakeFirstOrThrow();
  return { id: row.id, phone };
}

let invoiceSeq = 0;
/** A KES 100 invoice of `merchantId`, sent an hour ago (paid an hour ago too if `paid`). */
async function invoiceOf(merchantId: string, status: InvoiceStatus, receipt: string | null = null): Promise<{ id: string; customer: string }> {
  invoiceSeq += 1;
  const customer = `2547680${String(invoiceSeq).padStart(5, '0')}`;
  const hourAgo = new Date(Date.now() - 3_600_000);
  const row = await f.database.handle.db
    .insertInto('invoices')
    .values({
      merchant_id: merchantId,
      number: invoiceSeq,
      customer_phone: customer,
      amount: '100',
      description: 'review',
      status,
      due_date: '2026-12-31',
      sent_at: hourAgo,
      ...(status === 'paid' ? { paid_at: hourAgo, mpesa_receipt: receipt } : {}),
      ...(status === 'cancelled' ? { cancelled_at: hourAgo } : {}),
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return { id: row.id, customer };
}

/** An attempt on the invoice whose token is known: pending (pushed) unless told otherwise. */
async function attemptOn(inv: { id: string; customer: string }, state: { status?: 'pending' | 'succeeded' | 'failed'; receipt?: string | null; reviewReason?: string } = {}): Promise<Seeded> {
  tokenSeq += 1;
  const token = `review-${tokenSeq}-token-0123456789abcdefghijkl`;
  const checkout = `ws_CO_review_${tokenSeq}`;
  const row = await f.database.handle.db
    .insertInto('payment_attempts')
    .values({
      invoice_id: inv.id,
      checkout_request_id: checkout,
      merchant_request_id: `mr_${checkout}`,
      amount: '100',
      phone: inv.customer,
      callback_token_hash: sha256Hex(token),
      push_started_at: new Date(),
      status: state.status ?? 'pending',
      mpesa_receipt: state.receipt ?? null,
      ...(state.status === 'succeeded' ? { result_code: 0, completed_at: new Date() } : {}),
      ...(state.reviewReason === undefined ? {} : { review_reason: state.reviewReason }),
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return { token, checkout, invoiceId: inv.id, attemptId: row.id, customer: inv.customer };
}

/**
 * Two attempts whose failure callbacks write no message: one on an invoice already paid (under
 * `receipt`, by another attempt), one on a cancelled invoice.
 */
async function nothingToSend(receipt: string) {
  const m = await merchant();
  const paidInv = await invoiceOf(m.id, 'paid', receipt);
  await attemptOn(paidInv, { status: 'succeeded', receipt });
  const lateFail = await attemptOn(paidInv);
  const cancelledInv = await invoiceOf(m.id, 'cancelled');
  const cancelledFail = await attemptOn(cancelledInv);
  return { paidInv, lateFail, cancelledInv, cancelledFail };
}

const { callback, groups, invoice, attempt } = callbackSuite(() => f);
const paid = paidBody;
const declined = declinedBody;
/** The invoice's events in id order, each with the JSON type its data is stored as. */
async function events(invoiceId: string) {
  const { rows } = await sql<{ id: string; type: string; actor: string; data: Record<string, unknown>; kind: string }>`
    select id::text, type, actor, data, jsonb_typeof(data) as kind from invoice_events where invoice_id = ${invoiceId} order by id`.execute(f.database.handle.db);
  return rows;
}
async function outboxFor(invoiceId: string) {
  return f.database.handle.db.selectFrom('outbound_messages').select(['recipient', 'kind']).where('invoice_id', '=', invoiceId).orderBy('created_at').execute();
}

/** A callback that was refused left nothing: its attempt pending with no receipt, no event, no message. */
async function assertNothingKept(a: Seeded): Promise<void> {
  const row = await attempt(a.attemptId);
  assert.equal(row.status, 'pending');
  assert.equal(row.mpesa_receipt, null);
  assert.deepEqual(await events(a.invoiceId), []);
  assert.equal((await outboxFor(a.invoiceId)).length, 0);
}

/** The status of the callback kept for a retry for this attempt (test/payments-kept-callbacks.test.ts), if any. */
async function keptFor(a: Seeded): Promise<string | undefined> {
  const rows = await f.database.handle.db.selectFrom('inbound_events').select('status').where('source', '=', 'mpesa_callback').where('external_key', 'like', `${a.checkout}:%`).execute();
  assert.ok(rows.length <= 1, `one record per callback: ${rows.length}`);
  return rows[0]?.status;
}

/** The rollups (stats and daily activity) still equal the figures computed from the invoices. */
async function assertRollupsMatch(label: string): Promise<void> {
  const now = new Date();
  const today = nairobiToday(now);
  const shift = (days: number) => new Date(Date.parse(`${today}T00:00:00Z`) + days * 86_400_000).toISOString().slice(0, 10);
  const period: Period = { from: shift(-3), to: shift(3) };
  assert.deepEqual(await daily(f.database.handle.db, period, null), await dailyFromInvoices(f.database.handle.db, period, null), `${label}: daily activity`);
  const fromRollups = await summary(f.database.handle, period, null, now);
  const row = await fromInvoices(f.database.handle, period, null, now);
  const n = (v: string | null) => (v === null ? 0 : Number(v));
  assert.deepEqual(
    { ...fromRollups.invoice_stats, invoiced: fromRollups.amounts.invoiced, collected: fromRollups.amounts.collected },
    { total: n(row.total), pending: n(row.pending), sent: n(row.sent), paid: n(row.paid), failed: n(row.failed), cancelled: n(row.cancelled), overdue: n(row.overdue), invoiced: n(row.invoiced), collected: n(row.collected) },
    `${label}: summary`,
  );
}

describe('one-statement group write: review', () => {
  test('a group mixing every outcome leaves each invoice, attempt, event and message as the four statements did, and the rollups exact', async () => {
    const m = await merchant();
    const goodInv = await invoiceOf(m.id, 'sent');
    const twiceInv = await invoiceOf(m.id, 'sent');
    const failInv = await invoiceOf(m.id, 'sent');
    const failCancelledInv = await invoiceOf(m.id, 'cancelled');
    const shortInv = await invoiceOf(m.id, 'sent');
    const paidEarlierInv = await invoiceOf(m.id, 'paid', 'RRVWA00090');
    const queryPaidInv = await invoiceOf(m.id, 'paid', null);
    const cancelledInv = await invoiceOf(m.id, 'cancelled');

    const good = await attemptOn(goodInv);
    const twiceA = await attemptOn(twiceInv);
    const twiceB = await attemptOn(twiceInv);
    const fail = await attemptOn(failInv);
    const failCancelled = await attemptOn(failCancelledInv);
    const short = await attemptOn(shortInv);
    await attemptOn(paidEarlierInv, { status: 'succeeded', receipt: 'RRVWA00090' });
    const paidEarlier = await attemptOn(paidEarlierInv);
    const queryPaid = await attemptOn(queryPaidInv, { status: 'succeeded', receipt: null });
    const cancelled = await attemptOn(cancelledInv);

    const before = await groups();
    const answers = await Promise.all([
      callback(good.token, paid(good, 'RRVWA00001')),
      callback(twiceA.token, paid(twiceA, 'RRVWA00002')),
      callback(twiceB.token, paid(twiceB, 'RRVWA00003')),
      callback(fail.token, declined(fail)),
      callback(failCancelled.token, declined(failCancelled)),
      callback(short.token, paid(short, 'RRVWA00005', 10)),
      callback(paidEarlier.token, paid(paidEarlier, 'RRVWA00006')),
      callback(queryPaid.token, paid(queryPaid, 'RRVWA00007')),
      callback(cancelled.token, paid(cancelled, 'RRVWA00008')),
    ]);
    assert.deepEqual(
      answers.map((r) => r.status),
      answers.map(() => 200),
    );
    const grouped = await groups();
    assert.equal(grouped.callbacks - before.callbacks, 9);
    assert.ok(grouped.transactions - before.transactions < 9, 'the callbacks shared a group');
    await f.deps.outbox.idle();

    assert.deepEqual(await invoice(goodInv.id), { status: 'paid', mpesa_receipt: 'RRVWA00001' });
    assert.deepEqual((await events(goodInv.id)).map((e) => [e.type, e.kind, e.data.receipt]), [['paid', 'object', 'RRVWA00001']]);

    const ta = await attempt(twiceA.attemptId);
    const tb = await attempt(twiceB.attemptId);
    assert.equal(ta.status, 'succeeded');
    assert.equal(tb.status, 'failed');
    assert.equal(tb.mpesa_receipt, 'RRVWA00003');
    assert.deepEqual(await invoice(twiceInv.id), { status: 'paid', mpesa_receipt: 'RRVWA00002' });
    assert.deepEqual((await events(twiceInv.id)).map((e) => [e.type, e.kind, e.data.receipt]), [
      ['paid', 'object', 'RRVWA00002'],
      ['duplicate_payment', 'object', 'RRVWA00003'],
    ]);

    assert.equal((await attempt(fail.attemptId)).status, 'failed');
    assert.deepEqual((await events(failInv.id)).map((e) => [e.type, e.kind, e.data]), [['payment_failed', 'object', { result_code: 1032 }]]);
    assert.equal((await outboxFor(failInv.id)).length, 2);

    assert.equal((await attempt(failCancelled.attemptId)).status, 'failed');
    assert.deepEqual((await events(failCancelledInv.id)).map((e) => [e.type, e.kind]), [['payment_failed', 'object']]);
    assert.equal((await outboxFor(failCancelledInv.id)).length, 0);

    const sh = await attempt(short.attemptId);
    assert.equal(sh.status, 'failed');
    assert.equal(sh.mpesa_receipt, null);
    assert.deepEqual((await events(shortInv.id)).map((e) => [e.type, e.kind, e.data]), [['payment_needs_review', 'object', { asked: 100, paid: 10, receipt: 'RRVWA00005' }]]);

    const pe = await attempt(paidEarlier.attemptId);
    assert.equal(pe.status, 'failed');
    assert.equal(pe.mpesa_receipt, 'RRVWA00006');
    assert.deepEqual(await invoice(paidEarlierInv.id), { status: 'paid', mpesa_receipt: 'RRVWA00090' });
    assert.deepEqual((await events(paidEarlierInv.id)).map((e) => [e.type, e.kind]), [['duplicate_payment', 'object']]);

    const qp = await attempt(queryPaid.attemptId);
    assert.equal(qp.status, 'succeeded');
    assert.equal(qp.mpesa_receipt, 'RRVWA00007');
    assert.deepEqual(await invoice(queryPaidInv.id), { status: 'paid', mpesa_receipt: 'RRVWA00007' });
    assert.deepEqual((await events(queryPaidInv.id)).map((e) => [e.type, e.kind, e.data.receipt]), [['receipt_added', 'object', 'RRVWA00007']]);
    assert.equal((await outboxFor(queryPaidInv.id)).length, 0);

    assert.deepEqual(await invoice(cancelledInv.id), { status: 'paid', mpesa_receipt: 'RRVWA00008' });
    assert.deepEqual((await events(cancelledInv.id)).map((e) => [e.type, e.kind, e.data.was_cancelled]), [['paid', 'object', true]]);

    await assertRollupsMatch('after the mixed group');
  });

  test('a group of failure callbacks whose invoices are paid or cancelled (no message to write) still records the attempts and their events', async () => {
    const { paidInv, lateFail, cancelledInv, cancelledFail } = await nothingToSend('RRVWB00090');
    const before = await groups();
    const answers = await Promise.all([callback(lateFail.token, declined(lateFail)), callback(cancelledFail.token, declined(cancelledFail))]);
    const grouped = await groups();
    assert.deepEqual([grouped.callbacks - before.callbacks, grouped.transactions - before.transactions], [2, 1], 'one group of two');
    assert.deepEqual(
      answers.map((r) => r.status),
      [200, 200],
    );
    for (const a of [lateFail, cancelledFail]) {
      const row = await attempt(a.attemptId);
      assert.equal(row.status, 'failed');
      assert.equal(row.result_code, 1032);
      assert.ok(row.completed_at !== null);
      assert.deepEqual((await events(a.invoiceId)).map((e) => [e.type, e.kind, e.data]), [['payment_failed', 'object', { result_code: 1032 }]]);
      assert.equal((await outboxFor(a.invoiceId)).length, 0);
    }
    assert.deepEqual(await invoice(paidInv.id), { status: 'paid', mpesa_receipt: 'RRVWB00090' });
    assert.deepEqual(await invoice(cancelledInv.id), { status: 'cancelled', mpesa_receipt: null });
  });

  test('a receipt already on another invoice fails only its own callback (kept for a retry): the rest of the group is applied one by one, each once', async () => {
    const m = await merchant();
    await invoiceOf(m.id, 'paid', 'RRVWCTAKEN');
    const invs = [await invoiceOf(m.id, 'sent'), await invoiceOf(m.id, 'sent'), await invoiceOf(m.id, 'sent')];
    const as = [await attemptOn(invs[0]!), await attemptOn(invs[1]!), await attemptOn(invs[2]!)];
    const receipts = ['RRVWC00001', 'RRVWCTAKEN', 'RRVWC00003'];
    const answers = await Promise.all(as.map((a, i) => callback(a.token, paid(a, receipts[i]!))));
    // The refused one is kept for its retry job, so it is accepted too.
    assert.deepEqual(
      answers.map((r) => r.status),
      [200, 200, 200],
    );
    await f.deps.outbox.idle();
    for (const i of [0, 2]) {
      const a = as[i]!;
      assert.deepEqual(await invoice(a.invoiceId), { status: 'paid', mpesa_receipt: receipts[i] });
      assert.equal((await attempt(a.attemptId)).status, 'succeeded');
      assert.deepEqual((await events(a.invoiceId)).map((e) => [e.type, e.kind, e.data.receipt]), [['paid', 'object', receipts[i]]]);
      assert.equal((await outboxFor(a.invoiceId)).length, 2, 'a receipt to each side, written once');
    }
    // Nothing of the refused one was applied; the callback itself is kept for its retry.
    const bad = as[1]!;
    assert.deepEqual(await invoice(bad.invoiceId), { status: 'sent', mpesa_receipt: null });
    await assertNothingKept(bad);
    assert.equal(await keptFor(bad), 'retrying');
    await assertRollupsMatch('after the unique violation');
  });

  test("the 'paid N of M planned invoices' guard still rolls a group back when the one statement pays fewer invoices than planned, and the others are applied one by one", async () => {
    const db = f.database.handle.db;
    const m = await merchant();
    const invs = [await invoiceOf(m.id, 'sent'), await invoiceOf(m.id, 'sent'), await invoiceOf(m.id, 'sent')];
    const as = [await attemptOn(invs[0]!), await attemptOn(invs[1]!), await attemptOn(invs[2]!)];
    const receipts = ['RRVWD00001', 'RRVWDSKIP1', 'RRVWD00003'];
    // The database quietly skips one invoice's update (a BEFORE trigger returning null): the
    // statement returns fewer paid invoices than planned.
    await sql`create function skip_paid_for_test() returns trigger language plpgsql as $$
      begin
        if new.status = 'paid' and new.mpesa_receipt = 'RRVWDSKIP1' then return null; end if;
        return new;
      end $$`.execute(db);
    await sql`create trigger skip_paid_for_test before update on invoices for each row execute function skip_paid_for_test()`.execute(db);
    try {
      const answers = await Promise.all(as.map((a, i) => callback(a.token, paid(a, receipts[i]!))));
      // The one rolled back is kept for its retry job: accepted too.
      assert.deepEqual(
        answers.map((r) => r.status),
        [200, 200, 200],
      );
      assert.equal(await keptFor(as[1]!), 'retrying');
    } finally {
      await sql`drop trigger skip_paid_for_test on invoices`.execute(db);
      await sql`drop function skip_paid_for_test()`.execute(db);
    }
    await f.deps.outbox.idle();
    for (const i of [0, 2]) {
      assert.deepEqual(await invoice(as[i]!.invoiceId), { status: 'paid', mpesa_receipt: receipts[i] });
      assert.deepEqual((await events(as[i]!.invoiceId)).map((e) => e.type), ['paid']);
      assert.equal((await outboxFor(as[i]!.invoiceId)).length, 2);
    }
    const skipped = as[1]!;
    assert.equal((await attempt(skipped.attemptId)).status, 'pending', 'the attempt of the invoice not paid is rolled back with it');
    assert.deepEqual(await events(skipped.invoiceId), []);
    assert.equal((await outboxFor(skipped.invoiceId)).length, 0);
    // Sent again without the trigger, it pays, once (its kept record taken over).
    assert.equal((await callback(skipped.token, paid(skipped, 'RRVWDSKIP1'))).status, 200);
    assert.deepEqual(await invoice(skipped.invoiceId), { status: 'paid', mpesa_receipt: 'RRVWDSKIP1' });
    assert.deepEqual((await events(skipped.invoiceId)).map((e) => e.type), ['paid']);
    assert.equal(await keptFor(skipped), 'processed');
    await assertRollupsMatch('after the guard');
  });

  test('a group with attempts and events to write but no message (failures on paid or cancelled invoices) whose write fails is applied one by one: only the refused callback fails (kept for a retry)', async () => {
    const db = f.database.handle.db;
    const { paidInv, lateFail, cancelledInv, cancelledFail } = await nothingToSend('RRVWE00090');
    await sql`create function refuse_wrong_pin() returns trigger language plpgsql as $$
      begin
        if new.type = 'payment_failed' and new.data ->> 'result_code' = '2001' then raise exception 'refused for the test'; end if;
        return new;
      end $$`.execute(db);
    await sql`create trigger refuse_wrong_pin before insert on invoice_events for each row execute function refuse_wrong_pin()`.execute(db);
    const wrongPin = callbackBody({ checkoutRequestId: cancelledFail.checkout, merchantRequestId: `mr_${cancelledFail.checkout}`, resultCode: 2001, resultDesc: 'The initiator information is invalid.' });
    try {
      const answers = await Promise.all([callback(lateFail.token, declined(lateFail)), callback(cancelledFail.token, wrongPin)]);
      assert.deepEqual(
        answers.map((r) => r.status),
        [200, 200],
      );
      assert.equal(await keptFor(cancelledFail), 'retrying');
    } finally {
      await sql`drop trigger refuse_wrong_pin on invoice_events`.execute(db);
      await sql`drop function refuse_wrong_pin()`.execute(db);
    }
    const late = await attempt(lateFail.attemptId);
    assert.equal(late.status, 'failed');
    assert.deepEqual((await events(paidInv.id)).map((e) => [e.type, e.kind, e.data]), [['payment_failed', 'object', { result_code: 1032 }]]);
    assert.equal((await attempt(cancelledFail.attemptId)).status, 'pending');
    assert.deepEqual(await events(cancelledInv.id), []);
    // Sent again, it is recorded.
    assert.equal((await callback(cancelledFail.token, wrongPin)).status, 200);
    assert.equal((await attempt(cancelledFail.attemptId)).status, 'failed');
    assert.deepEqual((await events(cancelledInv.id)).map((e) => [e.type, e.data]), [['payment_failed', { result_code: 2001 }]]);
  });

  test('two groups at once paying different invoices with the same receipt (Postgres only): one pays, the other is refused (then or when sent again) as taken, neither leaves a half-write', async (t) => {
    if (f.database.kind !== 'postgres') {
      t.skip('needs two connections (TEST_DATABASE_URL)');
      return;
    }
    const m = await merchant();
    const x = await invoiceOf(m.id, 'sent');
    const y = await invoiceOf(m.id, 'sent');
    const ax = await attemptOn(x);
    const ay = await attemptOn(y);
    let pending: Array<Promise<Response>> = [];
    // Both groups stop at the invoices' lock, after their attempts are locked; released together,
    // each may look up the receipt's owner before the other has written it.
    await whileRowsHeld(f, 'invoices', [x.id, y.id], async () => {
      pending.push(callback(ax.token, paid(ax, 'RRVWFSAME1')));
      await new Promise((resolve) => setTimeout(resolve, 50));
      pending.push(callback(ay.token, paid(ay, 'RRVWFSAME1')));
      await new Promise((resolve) => setTimeout(resolve, 100));
    });
    const answers = await Promise.all(pending);
    pending = [];
    await f.deps.outbox.idle();
    const states = [await invoice(x.id), await invoice(y.id)];
    assert.deepEqual(states.map((s) => s.status).sort(), ['paid', 'sent']);
    const [winner, loser] = states[0]!.status === 'paid' ? [ax, ay] : [ay, ax];
    const [winnerAnswer, loserAnswer] = states[0]!.status === 'paid' ? answers : [answers[1]!, answers[0]!];
    assert.equal(winnerAnswer!.status, 200);
    // The loser, alone in its group, either saw the receipt taken (200) or lost at the unique
    // index (500: a group of one is not re-applied; Safaricom's retry is then refused as taken).
    assert.ok([200, 500].includes(loserAnswer!.status), `the loser answered ${loserAnswer!.status}`);
    assert.equal((await callback(loser.token, paid(loser, 'RRVWFSAME1'))).status, 200, 'sent again, it is refused as taken');
    assert.deepEqual(await invoice(winner.invoiceId), { status: 'paid', mpesa_receipt: 'RRVWFSAME1' });
    assert.equal((await attempt(winner.attemptId)).mpesa_receipt, 'RRVWFSAME1');
    assert.deepEqual((await events(winner.invoiceId)).map((e) => e.type), ['paid']);
    assert.equal((await outboxFor(winner.invoiceId)).length, 2);
    await assertNothingKept(loser);
    await assertRollupsMatch('after two groups raced on one receipt');
  });
});
