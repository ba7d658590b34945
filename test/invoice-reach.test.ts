/**
 * An invoice that reaches its customer on no channel is `failed` (README: what each status
 * means), and counted so by /stats/summary; a later invoice or reminder message that does go
 * out makes it `sent` again. Real outbox, fake Graph API on 127.0.0.1, Africa's Talking
 * intercepted at HTTP level.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { sql } from 'kysely';
import { addDays, nairobiToday } from '../src/domain/invoice.js';
import type { OutboundKind } from '../src/domain/outbound.js';
import { texts } from '../src/domain/texts.js';
import { applyDeliveryReport } from '../src/inbound/sms-report.js';
import { startChannelFixture, type ChannelFixture } from './helpers/channel.js';

const TOKEN = 'reach-token-0123456789abcdef0123456789ab';
let f: ChannelFixture;
before(async () => {
  f = await startChannelFixture({ env: { STATS_API_TOKEN: TOKEN, DELIVERY_SAFETY_NET_SECONDS: '3600' } });
});
after(() => f.close());
beforeEach(async () => {
  await f.deps.outbox.idle();
  f.graph.reset();
  f.smsAnswers.length = 0;
});

let next = 100;
const phone = () => `2547044${String((next += 1)).padStart(5, '0')}`;

/** A merchant, a `sent` invoice to a customer inside the 24-hour window, and the invoice's message (not yet delivered). */
async function sentInvoice(
  kind: OutboundKind = 'invoice',
  language: 'en' | 'sw' = 'en',
): Promise<{ invoiceId: string; merchantId: string; merchantPhone: string; messageId: string; customer: string }> {
  const db = f.database.handle.db;
  const customer = phone();
  const merchant = await db.insertInto('merchants').values({ phone: phone(), business_name: 'Duka', language }).returning(['id', 'phone']).executeTakeFirstOrThrow();
  const invoice = await db
    .insertInto('invoices')
    .values({ merchant_id: merchant.id, number: 1, customer_phone: customer, amount: 1500, description: 'flour', status: 'sent', sent_at: new Date(), due_date: '2030-01-01' })
    .returning('id')
    .executeTakeFirstOrThrow();
  await sql`insert into conversations (phone, state, last_inbound_at) values (${customer}, '{"version":0}'::jsonb, now())`.execute(db);
  const [messageId] = await db.transaction().execute((trx) =>
    f.deps.outbox.enqueue(trx, [{ recipient: customer, kind, invoiceId: invoice.id, payload: { message: { type: 'text', body: 'Invoice INV-0001: KES 1,500' } } }]),
  );
  return { invoiceId: invoice.id, merchantId: merchant.id, merchantPhone: merchant.phone, messageId: messageId!, customer };
}

const invoiceStatus = async (id: string) => (await f.database.handle.db.selectFrom('invoices').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status;
const events = async (id: string) => (await f.database.handle.db.selectFrom('invoice_events').select('type').where('invoice_id', '=', id).execute()).map((e) => e.type);

test('WhatsApp refuses the number (131026) and SMS refuses it too (403): the invoice is failed, once, and counted failed by /stats/summary', async () => {
  const { invoiceId, messageId } = await sentInvoice();
  f.graph.queue({ kind: 'error', status: 400, code: 131026, message: 'Message undeliverable' });
  f.smsAnswers.push({ statusCode: 403 });
  assert.equal(await f.deps.outbox.deliver(messageId), 'failed');
  assert.equal(await invoiceStatus(invoiceId), 'failed');
  assert.deepEqual(await events(invoiceId), ['unreached']);
  // Delivering again changes nothing more.
  assert.equal(await f.deps.outbox.deliver(messageId), 'not_pending');
  assert.deepEqual(await events(invoiceId), ['unreached']);
  const merchant = (await f.database.handle.db.selectFrom('invoices').innerJoin('merchants', 'merchants.id', 'invoices.merchant_id').select('merchants.phone').where('invoices.id', '=', invoiceId).executeTakeFirstOrThrow()).phone;
  const res = await f.app.request(`/stats/summary?merchant=${merchant}&from=${addDays(nairobiToday(new Date()), -1)}&to=${addDays(nairobiToday(new Date()), 1)}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  const body = (await res.json()) as { invoice_stats: { sent: number; failed: number } };
  assert.deepEqual([body.invoice_stats.sent, body.invoice_stats.failed], [0, 1]);
});

test('an SMS delivery report that says Failed (SMS was the last channel) makes the invoice failed; a reminder that then goes out makes it sent again', async () => {
  const { invoiceId, messageId, customer } = await sentInvoice();
  // Outside WhatsApp's reach (131026): SMS, accepted by the gateway...
  f.graph.queue({ kind: 'error', status: 400, code: 131026, message: 'Message undeliverable' });
  assert.equal(await f.deps.outbox.deliver(messageId), 'fell_back');
  assert.equal(await invoiceStatus(invoiceId), 'sent');
  const smsId = (await f.database.handle.db.selectFrom('outbound_messages').select('sms_message_id').where('id', '=', messageId).executeTakeFirstOrThrow()).sms_message_id!;
  // ...then reported failed by the network.
  const report = await f.app.request('/sms/delivery-report', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ id: smsId, status: 'Failed', failureReason: 'UnknownSubscriber' }).toString(),
  });
  assert.equal(report.status, 200);
  assert.equal(await invoiceStatus(invoiceId), 'failed');
  // The merchant fixes things and reminds: the reminder reaches the customer.
  const [reminder] = await f.database.handle.db.transaction().execute((trx) =>
    f.deps.outbox.enqueue(trx, [{ recipient: customer, kind: 'reminder', invoiceId, payload: { message: { type: 'text', body: 'Reminder: INV-0001' } } }]),
  );
  assert.equal(await f.deps.outbox.deliver(reminder!), 'sent');
  assert.equal(await invoiceStatus(invoiceId), 'sent');
});

test("only the invoice's own message decides: a receipt or notice about an invoice that fails everywhere leaves the invoice alone", async () => {
  const { invoiceId, messageId } = await sentInvoice('notice');
  f.graph.queue({ kind: 'error', status: 400, code: 131026, message: 'Message undeliverable' });
  f.smsAnswers.push({ statusCode: 403 });
  assert.equal(await f.deps.outbox.deliver(messageId), 'failed');
  assert.equal(await invoiceStatus(invoiceId), 'sent');
  assert.deepEqual(await events(invoiceId), []);
});

/** What was written to the merchant. */
const toMerchant = (merchantPhone: string) =>
  f.database.handle.db.selectFrom('outbound_messages').select(['id', 'kind', 'invoice_id', 'content', 'status']).where('recipient', '=', merchantPhone).orderBy('created_at').execute();

/** An SMS delivery report, as Africa's Talking posts it. */
const smsReport = (id: string, status: string) =>
  f.app.request('/sms/delivery-report', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ id, status, failureReason: 'UnknownSubscriber' }).toString(),
  });

test("an invoice that reaches nobody: the merchant gets a notice, in the merchant's language, written with the change and sent at once", async () => {
  const { invoiceId, messageId, merchantPhone, customer } = await sentInvoice('invoice', 'sw');
  f.graph.queue({ kind: 'error', status: 400, code: 131026, message: 'Message undeliverable' });
  f.smsAnswers.push({ statusCode: 403 });
  assert.equal(await f.deps.outbox.deliver(messageId), 'failed');
  assert.equal(await invoiceStatus(invoiceId), 'failed');
  const notices = await toMerchant(merchantPhone);
  assert.equal(notices.length, 1);
  assert.equal(notices[0]!.kind, 'notice', 'a notice: its own failure can never mark the invoice unreached');
  assert.equal(notices[0]!.invoice_id, invoiceId);
  assert.deepEqual((notices[0]!.content as { message: unknown }).message, texts.sw.invoiceUnreached(1, customer));
  // Dispatched after the commit (the merchant never wrote: outside the window, by SMS).
  await f.deps.outbox.idle();
  assert.equal((await toMerchant(merchantPhone))[0]!.status, 'sent');
  assert.ok(f.sms.some((m) => m.to === `+${merchantPhone}` && m.message.includes('INV-0001') && m.message.includes('hali 1')));
});

test('the same failure reported twice (SMS Failed twice, then Rejected) tells the merchant once; once a reminder reached the customer, a later failure of the invoice message does not make it unreached again', async () => {
  const { invoiceId, messageId, merchantPhone, customer } = await sentInvoice();
  f.graph.queue({ kind: 'error', status: 400, code: 131026, message: 'Message undeliverable' });
  assert.equal(await f.deps.outbox.deliver(messageId), 'fell_back');
  const smsId = (await f.database.handle.db.selectFrom('outbound_messages').select('sms_message_id').where('id', '=', messageId).executeTakeFirstOrThrow()).sms_message_id!;
  for (const status of ['Failed', 'Failed', 'Rejected']) assert.equal((await smsReport(smsId, status)).status, 200);
  await f.deps.outbox.idle();
  assert.equal(await invoiceStatus(invoiceId), 'failed');
  assert.deepEqual(await events(invoiceId), ['unreached']);
  const notices = await toMerchant(merchantPhone);
  assert.equal(notices.length, 1);
  assert.deepEqual((notices[0]!.content as { message: unknown }).message, texts.en.invoiceUnreached(1, customer));
  assert.equal(notices[0]!.status, 'sent', 'dispatched after the report was applied');
  // A reminder reaches the customer (sent again); then the invoice's message sent anew fails everywhere.
  const [reminder, again] = await f.database.handle.db.transaction().execute((trx) =>
    f.deps.outbox.enqueue(trx, [
      { recipient: customer, kind: 'reminder', invoiceId, payload: { message: { type: 'text', body: 'Reminder: INV-0001' } } },
      { recipient: customer, kind: 'invoice', invoiceId, payload: { message: { type: 'text', body: 'Invoice INV-0001: KES 1,500' } } },
    ]),
  );
  assert.equal(await f.deps.outbox.deliver(reminder!), 'sent');
  assert.equal(await invoiceStatus(invoiceId), 'sent');
  f.graph.queue({ kind: 'error', status: 400, code: 131026, message: 'Message undeliverable' });
  f.smsAnswers.push({ statusCode: 403 });
  assert.equal(await f.deps.outbox.deliver(again!), 'failed');
  assert.equal(await invoiceStatus(invoiceId), 'sent', 'the reminder reached the customer: not "reached on no channel"');
  assert.equal((await toMerchant(merchantPhone)).length, 1, 'nobody told to check a number that works');
});

test("an invoice's own message whose stored content no longer reads fails at once: the invoice is unreached, and the merchant is not told to check the number (the fault is ours)", async () => {
  const { invoiceId, messageId, merchantPhone } = await sentInvoice();
  await f.database.handle.db.updateTable('outbound_messages').set({ content: JSON.stringify({ message: { type: 'fax' } }) }).where('id', '=', messageId).execute();
  assert.equal(await f.deps.outbox.deliver(messageId), 'failed');
  assert.equal(await invoiceStatus(invoiceId), 'failed');
  assert.deepEqual(await events(invoiceId), ['unreached']);
  assert.deepEqual(await toMerchant(merchantPhone), []);
});

test('an SMS delivery report racing the record of its send (committed between the report\'s two look-ups) is applied, not answered 404 (Postgres only)', async (t) => {
  if (f.database.kind !== 'postgres') {
    t.skip('needs two connections (TEST_DATABASE_URL); the embedded database runs one transaction at a time');
    return;
  }
  const { invoiceId, messageId } = await sentInvoice();
  const db = f.database.handle.db;
  // The SMS is in flight: the gateway has answered with its id, the success is not written yet.
  await db.updateTable('outbound_messages').set({ channel: 'sms', status: 'sending' }).where('id', '=', messageId).execute();
  const smsId = `ATXid_race_${messageId.slice(0, 8)}`;
  let looked = 0;
  const notices = await db.transaction().execute(async (trx) => {
    // Right after the report's first look-up (by id: nothing yet), the send's success commits on
    // another connection, as recordSent writes it: one statement, sending -> sent with the id.
    const racing = trx.withPlugin({
      transformQuery: (args) => args.node,
      async transformResult(args) {
        looked += 1;
        if (looked === 1) await f.database.handle.pool.query(`update outbound_messages set status = 'sent', sms_message_id = $1 where id = $2`, [smsId, messageId]);
        return args.result;
      },
    });
    return applyDeliveryReport(racing, { id: smsId, status: 'Failed', failureReason: 'UnknownSubscriber' }, f.deps.outbox);
  });
  f.deps.outbox.dispatchSoon(notices);
  const row = await db.selectFrom('outbound_messages').select(['status', 'last_error']).where('id', '=', messageId).executeTakeFirstOrThrow();
  assert.equal(row.status, 'failed');
  assert.match(row.last_error ?? '', /Failed UnknownSubscriber/);
  assert.equal(await invoiceStatus(invoiceId), 'failed');
  assert.equal(notices.length, 1, 'the merchant is told');
});
