/**
 * What the merchant is told when an invoice reaches nobody, at the edges: a failure reported
 * after another of the invoice's messages reached the customer, a message that was never sent
 * (our fault, not the number's), and the notice's own SMS form. Real outbox, fake Graph API on
 * 127.0.0.1, Africa's Talking intercepted at HTTP level.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { sql } from 'kysely';
import { smsText } from '../src/domain/outbound.js';
import { texts } from '../src/domain/texts.js';
import { statusUpdate } from './fixtures/whatsapp.js';
import { startChannelFixture, type ChannelFixture } from './helpers/channel.js';

let f: ChannelFixture;
before(async () => {
  f = await startChannelFixture({ env: { DELIVERY_SAFETY_NET_SECONDS: '3600' } });
});
after(() => f.close());
beforeEach(async () => {
  await f.deps.outbox.idle();
  f.graph.reset();
  f.smsAnswers.length = 0;
});

let next = 300;
const phone = () => `2547055${String((next += 1)).padStart(5, '0')}`;

/** A merchant and a `sent` invoice; the customer's 24-hour window open or not. Returns the invoice's own message (not yet delivered). */
async function sentInvoice(windowOpen: boolean) {
  const db = f.database.handle.db;
  const customer = phone();
  const merchant = await db.insertInto('merchants').values({ phone: phone(), business_name: 'Duka', language: 'en' }).returning(['id', 'phone']).executeTakeFirstOrThrow();
  // The merchant talks to the bot (as every merchant does): notices go by WhatsApp.
  await sql`insert into conversations (phone, state, last_inbound_at) values (${merchant.phone}, '{"version":0}'::jsonb, now())`.execute(db);
  if (windowOpen) await sql`insert into conversations (phone, state, last_inbound_at) values (${customer}, '{"version":0}'::jsonb, now())`.execute(db);
  const invoice = await db
    .insertInto('invoices')
    .values({ merchant_id: merchant.id, number: 1, customer_phone: customer, amount: 1500, description: 'flour', status: 'sent', sent_at: new Date(), due_date: '2030-01-01' })
    .returning('id')
    .executeTakeFirstOrThrow();
  const [messageId] = await db.transaction().execute((trx) =>
    f.deps.outbox.enqueue(trx, [
      { recipient: customer, kind: 'invoice', invoiceId: invoice.id, payload: { message: { type: 'text', body: 'Invoice INV-0001: KES 1,500' }, sms: 'Duka: invoice INV-0001 KES 1,500' } },
    ]),
  );
  return { invoiceId: invoice.id, merchantPhone: merchant.phone, messageId: messageId!, customer };
}

const invoiceStatus = async (id: string) => (await f.database.handle.db.selectFrom('invoices').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status;
const noticesTo = (merchantPhone: string) =>
  f.database.handle.db.selectFrom('outbound_messages').select(['id', 'kind', 'content']).where('recipient', '=', merchantPhone).where('kind', '=', 'notice').execute();
const smsReport = (id: string, status: string) =>
  f.app.request('/sms/delivery-report', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ id, status, failureReason: 'DeliveryFailure' }).toString(),
  });

test('an SMS failure reported after a reminder for the same invoice reached the customer does not make the invoice "reached nobody" nor tell the merchant so', async () => {
  const { invoiceId, merchantPhone, messageId, customer } = await sentInvoice(false);
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
  assert.deepEqual(await noticesTo(merchantPhone), [], 'the merchant is told the invoice reached nobody (check the number, make a new invoice) though the customer has it');
});

test("an invoice message that was never sent (its stored content no longer reads) does not tell the merchant the customer's number failed on WhatsApp and SMS", async () => {
  const { invoiceId, merchantPhone, messageId, customer } = await sentInvoice(true);
  await f.database.handle.db.updateTable('outbound_messages').set({ content: JSON.stringify({ message: { type: 'fax' } }) }).where('id', '=', messageId).execute();
  assert.equal(await f.deps.outbox.deliver(messageId), 'failed');
  await f.deps.outbox.idle();
  assert.equal(f.graph.sentTo(customer).length, 0, 'nothing went to WhatsApp');
  assert.equal(f.sms.filter((m) => m.to === `+${customer}`).length, 0, 'nothing went to SMS');
  assert.equal(await invoiceStatus(invoiceId), 'failed');
  for (const notice of await noticesTo(merchantPhone)) {
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
  const { merchantPhone, messageId } = await sentInvoice(true);
  f.graph.queue({ kind: 'error', status: 400, code: 131026, message: 'Message undeliverable' });
  f.smsAnswers.push({ statusCode: 403 });
  assert.equal(await f.deps.outbox.deliver(messageId), 'failed');
  const [notice] = await noticesTo(merchantPhone);
  assert.equal(smsText(notice!.content as Parameters<typeof smsText>[0]), texts.en.invoiceUnreachedSms(1, (await f.database.handle.db.selectFrom('outbound_messages').select('recipient').where('id', '=', messageId).executeTakeFirstOrThrow()).recipient));
});
