/**
 * The server listens before the job queues exist (a faster cold start). A webhook or an STK
 * callback that arrives in that moment waits for the queues instead of failing or losing its
 * messages (a release that adds a queue meets an existing database so).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { APP_SECRET, inboundText, signed } from './fixtures/whatsapp.js';
import { buildTestApp, type TestApp } from './helpers/app.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { sql } from 'kysely';
import { sha256Hex } from '../src/security.js';

let database: TestDatabase;
let t: TestApp;
before(async () => {
  database = await createTestDatabase();
  t = buildTestApp(database, { env: { WABA_APP_SECRET: APP_SECRET, DELIVERY_SAFETY_NET_SECONDS: '3600' } });
});
after(async () => {
  await t.deps.outbox.idle();
  await t.deps.jobs.stop(2_000);
  await database.dispose();
});

test('a webhook before the queues exist waits for them, then commits its event and reply', async () => {
  const s = signed(inboundText('254711000001', 'hello'));
  let settled = false;
  const pending = Promise.resolve(t.app.request('/whatsapp/webhook', { method: 'POST', body: s.body, headers: s.headers })).finally(() => {
    settled = true;
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(settled, false, 'waits while the queues are not ready');
  assert.equal((await database.handle.db.selectFrom('inbound_events').select('id').execute()).length, 0);
  await t.deps.jobs.start(t.deps.jobDefinitions);
  const res = await pending;
  assert.equal(res.status, 200);
  const rows = await database.handle.db.selectFrom('outbound_messages').select('recipient').execute();
  assert.deepEqual(rows.map((r) => r.recipient), ['254711000001']);
});

test('an STK callback before the queues exist waits for them, then pays the invoice and writes both receipts', async () => {
  // An app of its own whose queues are not started yet (the first test started the other's).
  const app = buildTestApp(database, { env: { DELIVERY_SAFETY_NET_SECONDS: '3600' } });
  const token = 'startup-gate-token-0001';
  const db = database.handle.db;
  const merchant = await db.insertInto('merchants').values({ phone: '254711000002', business_name: 'Gate Shop' }).returning('id').executeTakeFirstOrThrow();
  const invoice = await db
    .insertInto('invoices')
    .values({ merchant_id: merchant.id, number: 1, customer_phone: '254711000003', amount: '150', description: 'tea', status: 'sent', due_date: sql<string>`current_date + 7` })
    .returning('id')
    .executeTakeFirstOrThrow();
  await db
    .insertInto('payment_attempts')
    .values({ invoice_id: invoice.id, checkout_request_id: 'ws_CO_gate_1', merchant_request_id: 'mr_gate_1', amount: '150', phone: '254711000003', callback_token_hash: sha256Hex(token) })
    .execute();
  const body = JSON.stringify({
    Body: {
      stkCallback: {
        MerchantRequestID: 'mr_gate_1',
        CheckoutRequestID: 'ws_CO_gate_1',
        ResultCode: 0,
        ResultDesc: 'The service request is processed successfully.',
        CallbackMetadata: { Item: [{ Name: 'Amount', Value: 150 }, { Name: 'MpesaReceiptNumber', Value: 'RGATE00001' }, { Name: 'PhoneNumber', Value: 254711000003 }] },
      },
    },
  });
  try {
    let settled = false;
    const pending = Promise.resolve(app.app.request(`/payments/stk/callback/${token}`, { method: 'POST', body, headers: { 'content-type': 'application/json' } })).finally(() => {
      settled = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(settled, false, 'waits while the queues are not ready');
    assert.equal((await db.selectFrom('invoices').select('status').where('id', '=', invoice.id).executeTakeFirstOrThrow()).status, 'sent');
    await app.deps.jobs.start(app.deps.jobDefinitions);
    const res = await pending;
    assert.equal(res.status, 200);
    assert.equal((await db.selectFrom('invoices').select('status').where('id', '=', invoice.id).executeTakeFirstOrThrow()).status, 'paid');
    const receipts = await db.selectFrom('outbound_messages').select('recipient').where('invoice_id', '=', invoice.id).where('kind', '=', 'receipt').orderBy('recipient').execute();
    assert.deepEqual(receipts.map((r) => r.recipient), ['254711000002', '254711000003']);
  } finally {
    await app.deps.outbox.idle();
    await app.deps.jobs.stop(2_000);
  }
});
