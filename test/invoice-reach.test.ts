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
import { smsText, type OutboundKind } from '../src/domain/outbound.js';
import { texts } from '../src/domain/texts.js';
import { applyDeliveryReport } from '../src/inbound/sms-report.js';
import { statusUpdate } from './fixtures/whatsapp.js';
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

/**
 * A merchant, a `sent` invoice to a customer inside the 24-hour window (unless `windowOpen` is
 * false), and the invoice's message (not yet delivered). `merchantChats`: the merchant talks to
 * the bot (as every merchant does), so notices go by WhatsApp.
 */
async function sentInvoice(
  kind: OutboundKind = 'invoice',
  language: 'en' | 'sw' = 'en',
  { windowOpen = true, merchantChats = false }: { windowOpen?: boolean; merchantChats?: boolean } = {},
): Promise<{ invoiceId: string; merchantId: string; merchantPhone: string; messageId: string; customer: string }> {
  const db = f.database.handle.db;
  const customer = phone();
  const merchant = await db.insertInto('merchants').values({ phone: phone(), business_name: 'Duka', language }).returning(['id', 'phone']).executeTakeFirstOrThrow();
  if (merchantChats) await sql`insert into conversations (phone, state, last_inbound_at) values (${merchant.phone}, '{"version":0}'::jsonb, now())`.execute(db);
  const invoice = await db
    .insertInto('invoices')
    .values({ merchant_id: merchant.id, number: 1, customer_phone: customer, amount: 1500, description: 'flour', status: 'sent', sent_at: new Date(), due_date: '2030-01-01' })
    .returning('id')
    .executeTakeFirstOrThrow();
  if (windowOpen) await sql`insert into conversations (phone, state, last_inbound_at) values (${customer}, '{"version":0}'::jsonb, now())`.execute(db);
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

// What the merchant is told at the edges: a failure reported after another of the invoice's
// messages reached the customer, a message never sent (our fault, not the number's), and the
// notice's own SMS form.

/** The notices written to the merchant. */
const notices = async (merchantPhone: string) => (await toMerchant(merchantPhone)).filter((m) => m.kind === 'notice');

test('an SMS failure reported after a reminder for the same invoice reached the customer does not make the invoice "reached nobody" nor tell the merchant so', async () => {
  const { invoiceId, merchantPhone, messageId, customer } = await sentInvoice('invoice', 'en', { windowOpen: false, merchantChats: true });
  // Outside the window, no template: the invoice goes by SMS, accepted by the gateway.
  assert.equal(await f.deps.outbox.deliver(messageId), 'sent');
  const smsId = (await f.database.handle.db.selectFrom('outbound_messages').select('sms_message_id').where('id', '=', messageId).executeTakeFirstOrThrow()).sms_message_id!;
  // The customer then writes on WhatsApp; the merchant's reminder goes out there and is delivered.
  await sql`insert into conversations (phone, state, last_inbound_at) values (${customer}, '{"version":0}'::jsonb, now())`.execute(f.database.handle.db);
  const [reminder] = await f.database.handle.db.transaction().execute((trx) =>
    f.deps.outbox.enqueue(trx, [{ recipient: customer, kind: 'reminder', invoiceId, payload: { message: { type: 'text', body: 'Reminder: INV-0001, KES 1,500' } } }]),
  );
  assert.equal(await f.deps.outbox.deliver(reminder!), 'sent');
  const wamid = (await f.database.handle.db.selectFrom('outbound_messages').select('provider_message_id').where('id', '=', reminder!).executeTakeFirstOrThrow()).provider_message_id!;
  assert.equal((await f.post(statusUpdate(wamid, 'delivered', customer))).status, 200);
  // Hours later the network reports the first SMS expired (a phone that was off, say).
  assert.equal((await smsReport(smsId, 'Expired')).status, 200);
  await f.deps.outbox.idle();
  assert.equal(await invoiceStatus(invoiceId), 'sent', 'README: failed means "reached the customer on no channel"; the reminder was delivered');
  assert.deepEqual(await notices(merchantPhone), [], 'the merchant is told the invoice reached nobody (check the number, make a new invoice) though the customer has it');
});

test("an invoice message that was never sent (its stored content no longer reads) does not tell the merchant the customer's number failed on WhatsApp and SMS", async () => {
  const { invoiceId, merchantPhone, messageId, customer } = await sentInvoice('invoice', 'en', { merchantChats: true });
  await f.database.handle.db.updateTable('outbound_messages').set({ content: JSON.stringify({ message: { type: 'fax' } }) }).where('id', '=', messageId).execute();
  assert.equal(await f.deps.outbox.deliver(messageId), 'failed');
  await f.deps.outbox.idle();
  assert.equal(f.graph.sentTo(customer).length, 0, 'nothing went to WhatsApp');
  assert.equal(f.sms.filter((m) => m.to === `+${customer}`).length, 0, 'nothing went to SMS');
  assert.equal(await invoiceStatus(invoiceId), 'failed');
  for (const notice of await notices(merchantPhone)) {
    const body = (notice.content as { message: { body: string } }).message.body;
    assert.ok(!/WhatsApp or SMS|Check the number|right number/.test(body), `the merchant is told to fix a number that never failed (and to make a second invoice): ${body}`);
  }
});

test('the unreached notice, likely to go by SMS (reported days later, outside the window), goes as one plain GSM-7 SMS: no emoji, no WhatsApp *bold* marks', async () => {
  // GSM 03.38 basic set (enough for these texts).
  const gsm = /^[A-Za-z0-9 @£$¥èéùìòÇØøÅå_ÆæßÉ!"#¤%&'()+,\-./:;<=>?¡ÄÖÑÜ§¿äöñüà]*$/;
  for (const language of ['en', 'sw'] as const) {
    for (const [number, customer] of [[7, '254712345678'], [99999, '254112345678']] as const) {
      const sms = texts[language].invoiceUnreachedSms(number, customer);
      assert.ok(gsm.test(sms), `${language}: not GSM-7 (UCS-2: 70 characters a part): ${sms}`);
      assert.ok(sms.length <= 160, `${language}: ${sms.length} characters: ${sms}`);
    }
  }
  // And that is what the notice carries for SMS.
  const { merchantPhone, messageId } = await sentInvoice('invoice', 'en', { merchantChats: true });
  f.graph.queue({ kind: 'error', status: 400, code: 131026, message: 'Message undeliverable' });
  f.smsAnswers.push({ statusCode: 403 });
  assert.equal(await f.deps.outbox.deliver(messageId), 'failed');
  const [notice] = await notices(merchantPhone);
  assert.equal(smsText(notice!.content as Parameters<typeof smsText>[0]), texts.en.invoiceUnreachedSms(1, (await f.database.handle.db.selectFrom('outbound_messages').select('recipient').where('id', '=', messageId).executeTakeFirstOrThrow()).recipient));
});
