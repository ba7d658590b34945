/**
 * STK callbacks the database refuses for a while (src/payments/service.ts keepOrFail,
 * retryCallback): Safaricom sends a callback "twice, late, or never", and only the callback
 * carries the M-PESA receipt number (the STK query has none). So one that cannot be applied
 * is kept (its inbound event, status retrying, with a retry job) and answered as accepted;
 * the retry job, or the same callback sent again, applies it through the same path, once.
 * A forged one is never kept. Faults are real: a trigger makes the database refuse a
 * statement. Real route, both databases.
 *
 * Two fixtures: `f` gives the retry queue no worker (the tests run retries by hand, with no
 * worker racing them); `w` runs every worker (the retry job on its own).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql, type KyselyPlugin, type QueryId, type RootOperationNode } from 'kysely';
import { createPayments } from '../src/payments/service.js';
import { sha256Hex } from '../src/security.js';
import { callbackSuite, paidBody, type SeededAttempt } from './helpers/callback-groups.js';
import { startChannelFixture, waitFor, type ChannelFixture } from './helpers/channel.js';

// Kept callbacks have their own limit of tries: INBOUND_MAX_ATTEMPTS (other inbound events') is lower here, and must not apply.
const env = { MPESA_CALLBACK_URL: 'https://invoiceiq.example/payments/stk/callback', MPESA_CALLBACK_MAX_ATTEMPTS: '3', INBOUND_MAX_ATTEMPTS: '1' };
let f: ChannelFixture;
let w: ChannelFixture;
before(async () => {
  f = await startChannelFixture({ env, idleQueues: ['retry-stk-callback'] });
  w = await startChannelFixture({ env });
});
after(async () => {
  await f.close();
  await w.close();
});

let seq = 0;

/** Helpers over one fixture. */
function on(fixture: () => ChannelFixture) {
  const { callback, invoice } = callbackSuite(fixture);
  const db = () => fixture().database.handle.db;

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

  /** The database refuses the paid event of this receipt (inside the callback's transaction), until allowReceipts. */
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

  const keptRow = (a: SeededAttempt, receipt: string) =>
    db().selectFrom('inbound_events').selectAll().where('source', '=', 'mpesa_callback').where('external_key', '=', `${a.checkout}:0:${receipt}:100`).executeTakeFirst();

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

  return {
    callback,
    invoice,
    db,
    seed,
    refuseReceipt,
    allowReceipts,
    keptRow,
    keptCallback,
    /** Retry jobs of this event not taken yet. */
    retryJobs: async (eventId: string) =>
      Number((await fixture().database.handle.pool.query(`select count(*)::int as n from pgboss.job where name = 'retry-stk-callback' and data->>'eventId' = $1 and state = 'created'`, [eventId])).rows[0].n),
    paidEvents: async (invoiceId: string) =>
      Number((await db().selectFrom('invoice_events').select((eb) => eb.fn.countAll<string>().as('n')).where('invoice_id', '=', invoiceId).where('type', '=', 'paid').executeTakeFirstOrThrow()).n),
    receiptsTo: (phone: string) => db().selectFrom('outbound_messages').select(['kind', 'content']).where('recipient', '=', phone).where('kind', '=', 'receipt').execute(),
  };
}

const h = on(() => f);

/**
 * A Kysely plugin that runs `hook` when the first query matching `matches` has answered,
 * before its caller sees the answer (the query itself ran, in its transaction): a fault at
 * one exact statement (`hook` throws), or another request slipped in just there.
 */
function onFirst(matches: (node: RootOperationNode) => boolean, hook: () => Promise<unknown>): KyselyPlugin {
  let armed = true;
  const marked = new WeakSet<QueryId>();
  return {
    transformQuery({ node, queryId }) {
      if (armed && matches(node)) {
        armed = false;
        marked.add(queryId);
      }
      return node;
    },
    async transformResult({ result, queryId }) {
      if (marked.has(queryId)) await hook();
      return result;
    },
  };
}
/** Its answer is an error instead: the statement's transaction rolls back. */
const failFirst = (matches: (node: RootOperationNode) => boolean) =>
  onFirst(matches, async () => {
    throw new Error('connection lost (test)');
  });
/** The callback's attempt lookup (select ... for update by token hash), as applyCallbacks runs it. */
const attemptLookup = (node: RootOperationNode) => node.kind === 'SelectQueryNode' && JSON.stringify(node).includes('callback_token_hash') && JSON.stringify(node).includes('ForUpdate');
/** Another payments service over the fixture's database, seen through `plugin`. */
const paymentsWith = (plugin: KyselyPlugin) =>
  createPayments({ db: f.database.handle.db.withPlugin(plugin), jobs: f.deps.jobs, outbox: f.deps.outbox, daraja: f.deps.daraja, config: f.deps.config, metrics: f.deps.metrics, logger: f.deps.logger });
/** Its first attempt lookup failing. */
const paymentsFailingLookup = () => paymentsWith(failFirst(attemptLookup));
const resultOf = (a: SeededAttempt, receipt: string) => ({ checkoutRequestId: a.checkout, resultCode: 0, resultDesc: 'The service request is processed successfully.', amount: 100, receipt, phone: a.customer });
const retry = (eventId: string) => f.deps.payments.retryCallback(eventId);

describe('STK callbacks kept for a retry (retries run by hand)', () => {
  test('a callback the database refuses is accepted and kept (token hashed, never stored), with its retry job; the invoice is not paid yet', async () => {
    const a = await h.seed();
    await h.refuseReceipt('RKEPT00001');
    try {
      const answer = await h.callback(a.token, paidBody(a, 'RKEPT00001'));
      assert.equal(answer.status, 200);
      assert.deepEqual(await answer.json(), { ResultCode: 0, ResultDesc: 'Accepted' });
    } finally {
      await h.allowReceipts();
    }
    const kept = await h.keptRow(a, 'RKEPT00001');
    assert.ok(kept !== undefined, 'kept as an inbound event');
    assert.equal(kept.status, 'retrying');
    assert.equal(kept.attempts, 1);
    assert.match(kept.last_error ?? '', /refused for the test/);
    const payload = kept.payload as { tokenHash: string; result: { receipt: string; amount: number } };
    assert.equal(payload.tokenHash, sha256Hex(a.token));
    assert.equal(payload.result.receipt, 'RKEPT00001');
    assert.equal(payload.result.amount, 100);
    assert.doesNotMatch(JSON.stringify(kept), new RegExp(a.token), 'the URL token itself is not stored');
    assert.equal(await h.retryJobs(kept.id), 1, 'a retry job is queued');
    assert.deepEqual(await h.invoice(a.invoiceId), { status: 'sent', mpesa_receipt: null });
    assert.equal((await h.db().selectFrom('payment_attempts').select('status').where('id', '=', a.attemptId).executeTakeFirstOrThrow()).status, 'pending');
    assert.match(await f.deps.metrics.registry.metrics(), /invoiceiq_inbound_events_total\{source="mpesa_callback",outcome="retrying"\} [1-9]/);
  });

  test('its retry, while the fault lasts, waits longer; once the fault is gone it pays the invoice with the M-PESA receipt number, and receipts go to both sides, once', async () => {
    const a = await h.seed();
    await h.refuseReceipt('RKEPT00002');
    let eventId: string;
    try {
      assert.equal((await h.callback(a.token, paidBody(a, 'RKEPT00002'))).status, 200);
      eventId = (await h.keptRow(a, 'RKEPT00002'))!.id;
      assert.equal(await retry(eventId), 'retrying');
      const row = (await h.keptRow(a, 'RKEPT00002'))!;
      assert.equal(row.status, 'retrying');
      assert.equal(row.attempts, 2);
      assert.equal(await h.retryJobs(eventId), 2, 'the next try is queued');
    } finally {
      await h.allowReceipts();
    }
    assert.equal(await retry(eventId), 'processed');
    assert.deepEqual(await h.invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00002' });
    assert.equal((await h.keptRow(a, 'RKEPT00002'))!.status, 'processed');
    await f.deps.outbox.idle();
    const toCustomer = await h.receiptsTo(a.customer);
    const toMerchant = await h.receiptsTo(a.merchant);
    assert.equal(toCustomer.length, 1);
    assert.equal(toMerchant.length, 1);
    assert.match(JSON.stringify(toCustomer[0]!.content), /RKEPT00002/);
    assert.match(JSON.stringify(toMerchant[0]!.content), /RKEPT00002/);
    // Its other queued job, or the sweep: nothing more.
    assert.equal(await retry(eventId), 'not_pending');
    // And the same callback sent again by Safaricom later: a duplicate.
    assert.equal((await h.callback(a.token, paidBody(a, 'RKEPT00002'))).status, 200);
    assert.equal(await h.paidEvents(a.invoiceId), 1);
    assert.equal((await h.receiptsTo(a.customer)).length, 1);
  });

  test('sent again by Safaricom while kept, it is applied at once: its kept record is taken over and the retry then finds nothing to do', async () => {
    const a = await h.seed();
    const keptId = await h.keptCallback(a, 'RKEPT00004');
    // Twenty copies at once: one paid transition.
    const answers = await Promise.all(Array.from({ length: 20 }, () => h.callback(a.token, paidBody(a, 'RKEPT00004'))));
    assert.deepEqual(new Set(answers.map((r) => r.status)), new Set([200]));
    assert.deepEqual(await h.invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00004' });
    const row = (await h.keptRow(a, 'RKEPT00004'))!;
    assert.equal(row.id, keptId, 'the kept record itself, taken over');
    assert.equal(row.status, 'processed');
    assert.equal(row.attempts, 2, 'the try that kept it, and the copy that applied it');
    assert.equal(row.last_error, null);
    assert.equal((row.payload as Record<string, unknown>).tokenHash, undefined, 'the record now holds what the callback said, as any processed one');
    assert.equal(await retry(keptId), 'not_pending');
    assert.equal(await h.paidEvents(a.invoiceId), 1);
    await f.deps.outbox.idle();
    assert.equal((await h.receiptsTo(a.customer)).length, 1);
  });

  test('a retry that read the kept record just before a copy sent again took it over does nothing and says so (not counted as processed; Postgres only)', async (t) => {
    if (f.database.kind !== 'postgres') {
      // The copy runs while the retry's read still holds its connection: the embedded database has one.
      t.skip('needs two connections (TEST_DATABASE_URL)');
      return;
    }
    const a = await h.seed();
    const keptId = await h.keptCallback(a, 'RKEPT00012');
    // The copy arrives through the route between the retry's read of the record and its apply.
    const readsKept = (node: RootOperationNode) => node.kind === 'SelectQueryNode' && JSON.stringify(node).includes('inbound_events');
    const racing = paymentsWith(onFirst(readsKept, async () => assert.equal((await h.callback(a.token, paidBody(a, 'RKEPT00012'))).status, 200)));
    assert.equal(await racing.retryCallback(keptId), 'not_pending');
    assert.deepEqual(await h.invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00012' });
    assert.equal(await h.paidEvents(a.invoiceId), 1);
    const row = (await h.keptRow(a, 'RKEPT00012'))!;
    assert.deepEqual([row.status, row.attempts], ['processed', 2]);
  });

  test('one that keeps failing is parked as dead after MPESA_CALLBACK_MAX_ATTEMPTS tries, not INBOUND_MAX_ATTEMPTS (with a metric); a copy that fails too revives it; one that does not pays', async () => {
    const a = await h.seed();
    await h.refuseReceipt('RKEPT00005');
    let eventId: string;
    try {
      assert.equal((await h.callback(a.token, paidBody(a, 'RKEPT00005'))).status, 200);
      eventId = (await h.keptRow(a, 'RKEPT00005'))!.id;
      // MPESA_CALLBACK_MAX_ATTEMPTS is 3 here (INBOUND_MAX_ATTEMPTS 1): the first try was the callback itself.
      assert.equal(await retry(eventId), 'retrying');
      const queued = await h.retryJobs(eventId);
      assert.equal(await retry(eventId), 'dead');
      assert.equal(await h.retryJobs(eventId), queued, 'no further try is queued');
      assert.equal((await h.keptRow(a, 'RKEPT00005'))!.status, 'dead');
      assert.equal(await retry(eventId), 'not_pending');
      assert.match(await f.deps.metrics.registry.metrics(), /invoiceiq_inbound_events_total\{source="mpesa_callback",outcome="dead"\} [1-9]/);
      // Safaricom sends it again while the fault lasts: the dead record is revived, with a new try queued.
      assert.equal((await h.callback(a.token, paidBody(a, 'RKEPT00005'))).status, 200);
      const revived = (await h.keptRow(a, 'RKEPT00005'))!;
      assert.deepEqual([revived.id, revived.status, revived.attempts], [eventId, 'retrying', 1]);
      assert.equal(await h.retryJobs(eventId), queued + 1);
      // Tried to the end again.
      assert.equal(await retry(eventId), 'retrying');
      assert.equal(await retry(eventId), 'dead');
    } finally {
      await h.allowReceipts();
    }
    assert.deepEqual(await h.invoice(a.invoiceId), { status: 'sent', mpesa_receipt: null });
    assert.equal((await h.callback(a.token, paidBody(a, 'RKEPT00005'))).status, 200);
    assert.deepEqual(await h.invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00005' });
    assert.equal((await h.keptRow(a, 'RKEPT00005'))!.status, 'processed');
  });

  test('a kept callback whose attempt no longer matches is parked as dead at its retry, not tried again', async () => {
    const a = await h.seed();
    const keptId = await h.keptCallback(a, 'RKEPT00006');
    const queued = await h.retryJobs(keptId);
    // The attempt now names another CheckoutRequestID.
    await h.db().updateTable('payment_attempts').set({ checkout_request_id: 'ws_CO_another' }).where('id', '=', a.attemptId).execute();
    assert.equal(await retry(keptId), 'dead');
    const row = (await h.keptRow(a, 'RKEPT00006'))!;
    assert.equal(row.status, 'dead');
    assert.match(row.last_error ?? '', /rejected: checkout_mismatch/);
    assert.equal(await h.retryJobs(keptId), queued, 'no further try is queued');
    assert.deepEqual(await h.invoice(a.invoiceId), { status: 'sent', mpesa_receipt: null });
  });

  test('a forged callback in a group the database refuses is refused (404), as on a good day, and never kept', async () => {
    const a = await h.seed();
    const forgedToken = 'forged-token-0123456789abcdef0123456789abcdef';
    await h.refuseReceipt('RKEPT00009');
    let answers: Response[];
    try {
      // One group: the genuine callback fails it; then each alone.
      answers = await Promise.all([h.callback(a.token, paidBody(a, 'RKEPT00009')), h.callback(forgedToken, paidBody(a, 'RKEPTFORGE'))]);
    } finally {
      await h.allowReceipts();
    }
    assert.deepEqual(
      answers.map((r) => r.status),
      [200, 404],
    );
    assert.equal((await h.keptRow(a, 'RKEPT00009'))?.status, 'retrying');
    assert.equal(await h.keptRow(a, 'RKEPTFORGE'), undefined);
  });

  test('when the attempt lookup itself fails, a genuine callback is kept, and a forged one (unknown token) is refused and never kept', async () => {
    const a = await h.seed();
    assert.deepEqual(await paymentsFailingLookup().handleCallback(a.token, resultOf(a, 'RKEPT00011')), { status: 'kept' });
    assert.equal((await h.keptRow(a, 'RKEPT00011'))?.status, 'retrying');
    assert.match((await h.keptRow(a, 'RKEPT00011'))?.last_error ?? '', /connection lost \(test\)/);
    const forged = 'forged-token-abcdef0123456789abcdef0123456789';
    assert.deepEqual(await paymentsFailingLookup().handleCallback(forged, resultOf(a, 'RKEPTFORG2')), { status: 'rejected', reason: 'unknown_token' });
    assert.equal(await h.keptRow(a, 'RKEPTFORG2'), undefined);
    // The genuine one's retry pays it.
    assert.equal(await retry((await h.keptRow(a, 'RKEPT00011'))!.id), 'processed');
    assert.deepEqual(await h.invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00011' });
  });

  test('a callback that can be neither applied nor kept gets a 500 (Safaricom may send it again) and leaves nothing', async () => {
    const a = await h.seed();
    await h.refuseReceipt('RKEPT00007');
    await sql`create function refuse_keeping() returns trigger language plpgsql as $$
      begin
        if new.status = 'retrying' and new.external_key like ${sql.lit(`${a.checkout}:%`)} then raise exception 'refused to keep it'; end if;
        return new;
      end $$`.execute(h.db());
    await sql`create trigger refuse_keeping before insert on inbound_events for each row execute function refuse_keeping()`.execute(h.db());
    let status: number;
    try {
      status = (await h.callback(a.token, paidBody(a, 'RKEPT00007'))).status;
    } finally {
      await sql`drop trigger refuse_keeping on inbound_events`.execute(h.db());
      await sql`drop function refuse_keeping()`.execute(h.db());
      await h.allowReceipts();
    }
    assert.equal(status, 500);
    assert.equal(await h.keptRow(a, 'RKEPT00007'), undefined);
    assert.deepEqual(await h.invoice(a.invoiceId), { status: 'sent', mpesa_receipt: null });
    // Sent again, now that the database takes it: paid.
    assert.equal((await h.callback(a.token, paidBody(a, 'RKEPT00007'))).status, 200);
    assert.deepEqual(await h.invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00007' });
  });

  test("the WhatsApp retry job leaves a kept callback alone (an older machine's sweep may queue it there)", async () => {
    const a = await h.seed();
    const keptId = await h.keptCallback(a, 'RKEPT00010');
    assert.equal(await f.deps.inbound.retryEvent(keptId), 'not_pending');
    const row = (await h.keptRow(a, 'RKEPT00010'))!;
    assert.deepEqual([row.status, row.attempts], ['retrying', 1]);
    assert.equal(await retry(keptId), 'processed');
    assert.deepEqual(await h.invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00010' });
  });
  test('the inbound retry sweep queues a stuck kept callback on its own retry job, not the WhatsApp one', async () => {
    const a = await h.seed();
    const keptId = await h.keptCallback(a, 'RKEPT00008');
    // Its job is gone and it has waited three hours.
    await f.database.handle.pool.query(`delete from pgboss.job where name = 'retry-stk-callback' and data->>'eventId' = $1`, [keptId]);
    await h.db().updateTable('inbound_events').set({ updated_at: sql`now() - interval '3 hours'` }).where('id', '=', keptId).execute();
    assert.equal(await f.deps.inbound.sweepRetries(), 1);
    const queued = await f.database.handle.pool.query(`select name from pgboss.job where data->>'eventId' = $1 and state = 'created'`, [keptId]);
    assert.deepEqual(
      queued.rows.map((r: { name: string }) => r.name),
      ['retry-stk-callback'],
    );
    // That job's work: paid.
    assert.equal(await retry(keptId), 'processed');
    assert.deepEqual(await h.invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00008' });
  });
});

const j = on(() => w);

describe('STK callbacks kept for a retry (retry workers running)', () => {
  test('the retry job queued with it applies it by itself once the fault is gone', async () => {
    const a = await j.seed();
    const keptId = await j.keptCallback(a, 'RKEPT00003');
    // The fixture's job workers run it (first try after about 2 s; one that ran before the
    // fault was gone waits 2-4 s more).
    await waitFor(async () => (await j.invoice(a.invoiceId)).status === 'paid', 15_000, 'the retry job');
    assert.deepEqual(await j.invoice(a.invoiceId), { status: 'paid', mpesa_receipt: 'RKEPT00003' });
    assert.equal((await j.keptRow(a, 'RKEPT00003'))!.status, 'processed');
    assert.equal(await w.deps.payments.retryCallback(keptId), 'not_pending');
    assert.equal(await j.paidEvents(a.invoiceId), 1);
  });
});
