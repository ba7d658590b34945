/**
 * Payment edges found in review (each test failed on the code before its fix): what the
 * merchant is told about an invoice paid twice, a wrong amount on a paid invoice, an attempt
 * expired after another paid the invoice; a push waiting for its retry never goes out once a
 * newer prompt started; a customer with the same invoice number from two merchants can pay
 * each. The real service on both databases (TEST_DATABASE_URL set: Postgres; unset: PGlite),
 * with a stub Daraja client and rows seeded in SQL, as in test/payments-outage.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createPayments } from '../src/payments/service.js';
import { ProviderError } from '../src/providers/errors.js';
import type { DarajaClient, StkPushRequest } from '../src/providers/mpesa/client.js';
import { sha256Hex } from '../src/security.js';
import { startChannelFixture, type ChannelFixture } from './helpers/channel.js';

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
const db = () => f.database.handle.db;

/** A merchant with one sent invoice (number 1, KES 1500) and `attempts` pending attempts with known tokens. */
async function seed(attempts: number, options: { createdAt?: Date; pushed?: boolean } = {}) {
  seq += 1;
  const merchant = `2547460${String(seq).padStart(5, '0')}`;
  const customer = `2547470${String(seq).padStart(5, '0')}`;
  const { id: merchantId } = await db().insertInto('merchants').values({ phone: merchant, business_name: `Review Duka ${seq}` }).returning('id').executeTakeFirstOrThrow();
  const invoice = await db()
    .insertInto('invoices')
    .values({ merchant_id: merchantId, number: 1, customer_phone: customer, amount: '1500', description: 'flour', status: 'sent', due_date: '2026-12-31' })
    .returning(['id', 'number'])
    .executeTakeFirstOrThrow();
  const created = options.createdAt ?? now();
  const rows = [];
  for (let i = 0; i < attempts; i += 1) {
    const token = `review-token-${seq}-${i}-0123456789abcdefghijklmnop`;
    const checkout = `ws_CO_rev_${seq}_${i}`;
    const row = await db()
      .insertInto('payment_attempts')
      .values({
        invoice_id: invoice.id,
        checkout_request_id: options.pushed === false ? null : checkout,
        merchant_request_id: options.pushed === false ? null : `mr_${checkout}`,
        amount: '1500',
        phone: customer,
        callback_token_hash: sha256Hex(token),
        push_started_at: options.pushed === false ? null : new Date(created.getTime() + i),
        created_at: new Date(created.getTime() + i),
        initiated_by: 'customer',
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    rows.push({ id: row.id, token, checkout });
  }
  return { merchant, customer, invoice, attempts: rows };
}

const noDaraja: DarajaClient = { configured: true, stkPush: () => Promise.reject(new Error('not used')), stkQuery: async () => ({ state: 'pending' }) };
function payments(daraja: DarajaClient = noDaraja, options: { reconcileBudgetMs?: number } = {}) {
  // Jobs are not run here (the test calls push itself): the fixture's own worker has no M-PESA credentials.
  return createPayments({ db: db(), jobs: { enqueue: async () => undefined } as never, outbox: f.deps.outbox, daraja, config: f.deps.config, metrics: f.deps.metrics, logger: f.deps.logger, now, ...options });
}
const success = (checkout: string, phone: string, amount: number, receipt: string) => ({
  checkoutRequestId: checkout,
  resultCode: 0,
  resultDesc: 'The service request is processed successfully.',
  amount,
  receipt,
  phone,
});
async function messagesTo(phone: string, kind: string): Promise<string[]> {
  const rows = await db().selectFrom('outbound_messages').select('content').where('recipient', '=', phone).where('kind', '=', kind).orderBy('created_at').execute();
  return rows.map((r) => JSON.stringify((r.content as { message: unknown }).message));
}
const invoiceRow = (id: string) => db().selectFrom('invoices').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

describe('review: what the merchant is told about a paid invoice', () => {
  test('paid twice: the merchant is not told the invoice is unpaid, nor that the amounts differ', async () => {
    const s = await seed(2);
    const w = payments();
    const [a, b] = s.attempts;
    assert.equal((await w.handleCallback(a!.token, success(a!.checkout, s.customer, 1500, 'RVTWICE001'))).status, 'applied');
    assert.equal((await w.handleCallback(b!.token, success(b!.checkout, s.customer, 1500, 'RVTWICE002'))).status, 'review');
    assert.equal((await invoiceRow(s.invoice.id)).status, 'paid');
    const notices = await messagesTo(s.merchant, 'notice');
    assert.equal(notices.length, 1);
    assert.doesNotMatch(notices[0]!, /haven't marked it paid/, `the invoice IS paid, yet the merchant reads: ${notices[0]}`);
    assert.doesNotMatch(notices[0]!, /KES 1,500 came in for .* but the invoice is for KES 1,500/, `"came in ... but the invoice is for" the same amount: ${notices[0]}`);
  });

  test('a wrong-amount callback on an invoice another attempt already paid: the merchant is not told it is unpaid', async () => {
    const s = await seed(2);
    const w = payments();
    const [a, b] = s.attempts;
    assert.equal((await w.handleCallback(b!.token, success(b!.checkout, s.customer, 1500, 'RVMISM0001'))).status, 'applied');
    assert.equal((await w.handleCallback(a!.token, success(a!.checkout, s.customer, 15, 'RVMISM0002'))).status, 'review');
    assert.equal((await invoiceRow(s.invoice.id)).status, 'paid');
    const notices = await messagesTo(s.merchant, 'notice');
    assert.equal(notices.length, 1);
    assert.doesNotMatch(notices[0]!, /haven't marked it paid/, `the invoice IS paid, yet the merchant reads: ${notices[0]}`);
  });

  test('an older attempt expired by reconciliation after the invoice was paid by a newer one: no "not paid yet" to the merchant', async () => {
    const start = clock;
    const s = await seed(2);
    const [a, b] = s.attempts;
    // Only this invoice's attempts pending: reconciliation asks about every pending attempt.
    await db().updateTable('payment_attempts').set({ status: 'failed' }).where('status', '=', 'pending').where('invoice_id', '<>', s.invoice.id).execute();
    const w = payments();
    assert.equal((await w.handleCallback(b!.token, success(b!.checkout, s.customer, 1500, 'RVEXPIRE01'))).status, 'applied');
    // A's callback never comes; M-PESA keeps saying "being processed"; 31 minutes on it is expired.
    clock = start + 31 * 60_000;
    try {
      const totals = await w.reconcile();
      assert.equal(totals.expired, 1);
    } finally {
      clock = start;
    }
    assert.equal((await db().selectFrom('payment_attempts').select('status').where('id', '=', a!.id).executeTakeFirstOrThrow()).status, 'expired');
    assert.equal((await invoiceRow(s.invoice.id)).status, 'paid');
    const notices = await messagesTo(s.merchant, 'notice');
    assert.deepEqual(notices, [], `the merchant of a paid invoice is told: ${notices.join(' | ')}`);
  });
});

describe('review: the 2-minute guard and a push waiting for its retry', () => {
  test('a push refused for now (spike arrest) and retried after a newer prompt started: one prompt at a time, not two', async () => {
    const start = clock;
    const s = await seed(1, { pushed: false });
    const [a] = s.attempts;
    const pushes: StkPushRequest[] = [];
    let refuseNext = true;
    const w = payments({
      configured: true,
      async stkPush(request) {
        pushes.push(request);
        if (refuseNext) {
          refuseNext = false;
          throw new ProviderError({ provider: 'mpesa', message: 'Spike arrest violation', code: '500.003.02', httpStatus: 500, retryable: true });
        }
        return { merchantRequestId: `mr_${pushes.length}_${seq}`, checkoutRequestId: `ws_CO_guard_${pushes.length}_${seq}`, customerMessage: 'ok' };
      },
      stkQuery: async () => ({ state: 'pending' }),
    });
    // The first push is refused for now: released for the job's retry (20 s, 40 s, 80 s with backoff).
    await assert.rejects(w.push(a!.id));
    try {
      // The customer replies PAY after 2 minutes, as the prompt message tells them to.
      clock = start + 2 * 60_000 + 1_000;
      const decision = await db().transaction().execute((trx) => w.requestPayment(trx, s.invoice.id, 'customer'));
      const newer = await db().selectFrom('payment_attempts').select('id').where('invoice_id', '=', s.invoice.id).where('id', '<>', a!.id).executeTakeFirst();
      if (decision === 'start') assert.equal(await w.push(newer!.id), 'pushed');
      // The first attempt's job retry comes (third retry ~140 s after the first try).
      clock = start + 2 * 60_000 + 20_000;
      await w.push(a!.id);
    } finally {
      clock = start;
    }
    const prompted = pushes.length - 1; // the refused one reached no phone
    assert.equal(prompted, 1, `${prompted} STK prompts for one invoice reached the phone within seconds: the customer can pay twice`);
  });
});

describe('review: the pay:<number> button', () => {
  test('a customer with an INV-0001 from each of two merchants: tapping Pay now (or the list row) starts a prompt', async () => {
    const { envelope, wamid } = await import('./fixtures/whatsapp.js');
    seq += 1;
    const customer = `2547480${String(seq).padStart(5, '0')}`;
    const invoices: string[] = [];
    for (const name of ['Duka A', 'Duka B']) {
      const { id: merchantId } = await db().insertInto('merchants').values({ phone: `2547490${String(seq).padStart(3, '0')}${invoices.length}0`, business_name: `${name} ${seq}` }).returning('id').executeTakeFirstOrThrow();
      const invoice = await db()
        .insertInto('invoices')
        .values({ merchant_id: merchantId, number: 1, customer_phone: customer, amount: '1500', description: 'flour', status: 'sent', due_date: '2026-12-31', created_at: new Date(clock - 60_000 * (2 - invoices.length)) })
        .returning('id')
        .executeTakeFirstOrThrow();
      invoices.push(invoice.id);
    }
    const tap = (type: 'button_reply' | 'list_reply', id: string) =>
      f.post(envelope({ messages: [{ from: customer, id: wamid(), timestamp: String(Math.floor(clock / 1000)), type: 'interactive', interactive: { type, [type]: { id, title: 'Pay now' } } }] }));
    // The reminder's (or the invoice's) Pay now button, then each row of the list it answers with.
    assert.equal((await tap('button_reply', 'pay:INV-0001')).status, 200);
    const offered = await db().selectFrom('outbound_messages').select('content').where('recipient', '=', customer).orderBy('created_at', 'desc').executeTakeFirstOrThrow();
    const list = (offered.content as { message: { type: string; sections?: Array<{ rows: Array<{ id: string }> }> } }).message;
    assert.equal(list.type, 'list');
    const rows = list.sections!.flatMap((section) => section.rows.map((row) => row.id));
    assert.equal(new Set(rows).size, 2, `one row per invoice, each its own id: ${rows.join(', ')}`);
    for (const id of rows) assert.equal((await tap('list_reply', id)).status, 200);
    const attempts = await db().selectFrom('payment_attempts').select('invoice_id').where('invoice_id', 'in', invoices).execute();
    assert.deepEqual(new Set(attempts.map((a) => a.invoice_id)), new Set(invoices), 'a prompt for each invoice, one tap each');
    const replies = await db().selectFrom('outbound_messages').select('content').where('recipient', '=', customer).orderBy('created_at').execute();
    assert.ok(
      attempts.length > 0,
      `three taps on Pay now, no M-PESA prompt for either invoice; the customer got: ${replies.map((r) => JSON.stringify((r.content as { message?: { body?: unknown } }).message?.body ?? r.content).slice(0, 90)).join(' | ')}`,
    );
  });
});

describe('reconciliation against a slow Daraja', () => {
  test("no query is started once the run's time is up; the attempts of the page not asked are given back, and the next run asks them first", async () => {
    const s = await seed(12, { createdAt: new Date(clock - 10 * 60_000) });
    // Only these attempts pending: reconciliation asks about every pending attempt.
    await db().updateTable('payment_attempts').set({ status: 'failed' }).where('status', '=', 'pending').where('invoice_id', '<>', s.invoice.id).execute();
    const asked: string[] = [];
    // Each query takes 1 s and answers "still being processed".
    const slow: DarajaClient = {
      ...noDaraja,
      stkQuery: async (checkout) => {
        asked.push(checkout);
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        return { state: 'pending' };
      },
    };
    // 1.5 s: the first four queries start at once, four more when those end if that is before
    // the deadline, and none after (a third four could start at 2 s at the earliest); without
    // the check within the page all twelve would be asked. (Seconds, not a few hundred ms: on a
    // loaded machine the claim alone could outlast a shorter run, and nothing would be asked.)
    await payments(slow, { reconcileBudgetMs: 1_500 }).reconcile();
    assert.ok(asked.length > 0 && asked.length < 12, `asked ${asked.length} of 12 within the run's time`);
    const rows = await db().selectFrom('payment_attempts').select(['checkout_request_id', 'last_queried_at', 'query_count']).where('invoice_id', '=', s.invoice.id).execute();
    const unasked = rows.filter((row) => !asked.includes(row.checkout_request_id!));
    assert.equal(unasked.length, 12 - asked.length);
    for (const row of unasked) {
      assert.equal(row.last_queried_at, null, `${row.checkout_request_id}: given back as it was (never asked)`);
      assert.equal(row.query_count, 0, `${row.checkout_request_id}: its backoff did not grow`);
    }
    for (const row of rows.filter((r) => asked.includes(r.checkout_request_id!))) assert.equal(row.query_count, 1);

    // The next run, at the same moment: the ones asked wait for their backoff, the others are asked now.
    const before = asked.length;
    await payments(slow).reconcile();
    assert.deepEqual(asked.slice(before).sort(), unasked.map((row) => row.checkout_request_id!).sort());
  });
});
