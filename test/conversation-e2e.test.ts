/**
 * The conversation end to end: signed webhooks through the real route, the real shell and
 * machine, the outbox and the fake Graph API / intercepted SMS, on both databases.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createConversationHandler } from '../src/conversation/handler.js';
import type { MessageContent } from '../src/domain/outbound.js';
import { texts } from '../src/domain/texts.js';
import { envelope, wamid } from './fixtures/whatsapp.js';
import { startChannelFixture, type ChannelFixture } from './helpers/channel.js';

let clock = new Date('2026-11-22T07:00:00.000Z').getTime();
const now = () => new Date(clock);

let f: ChannelFixture;
before(async () => {
  f = await startChannelFixture({ conversation: createConversationHandler({ now }), env: { DELIVERY_SAFETY_NET_SECONDS: '3600' } });
});
after(() => f.close());

const MERCHANT = '254722000001';
const OTHER_MERCHANT = '254722000002';
const CUSTOMER = '254733000001';

function say(from: string, body: string) {
  return f.post(envelope({ contacts: [{ profile: { name: 'x' }, wa_id: from }], messages: [{ from, id: wamid(), timestamp: String(Math.floor(clock / 1000)), type: 'text', text: { body } }] }));
}
function tap(from: string, id: string, title = id, kind: 'button_reply' | 'list_reply' = 'button_reply') {
  return f.post(envelope({ messages: [{ from, id: wamid(), timestamp: String(Math.floor(clock / 1000)), type: 'interactive', interactive: { type: kind, [kind]: { id, title } } }] }));
}

/** Every message written to `phone`, oldest first. */
async function messagesTo(phone: string): Promise<Array<{ kind: string; content: { message: MessageContent; sms?: string } }>> {
  const rows = await f.database.handle.db.selectFrom('outbound_messages').select(['kind', 'content', 'created_at']).where('recipient', '=', phone).orderBy('created_at').orderBy('id').execute();
  return rows.map((r) => ({ kind: r.kind, content: r.content as { message: MessageContent; sms?: string } }));
}
async function lastTo(phone: string): Promise<MessageContent> {
  const all = await messagesTo(phone);
  return all.at(-1)!.content.message;
}
const bodyOf = (m: MessageContent) => ('body' in m ? m.body : '');

async function invoices(merchantPhone: string) {
  return f.database.handle.db
    .selectFrom('invoices')
    .innerJoin('merchants', 'merchants.id', 'invoices.merchant_id')
    .select(['invoices.id', 'invoices.number', 'invoices.status', 'invoices.customer_phone', 'invoices.amount', 'invoices.description'])
    .where('merchants.phone', '=', merchantPhone)
    .orderBy('invoices.number')
    .execute();
}

describe('a merchant from first message to invoices', () => {
  test('onboarding: the business name is asked, then the merchant is registered', async () => {
    assert.equal((await say(MERCHANT, 'hi')).status, 200);
    assert.deepEqual(await lastTo(MERCHANT), texts.en.askBusinessName());
    await say(MERCHANT, 'Duka La Mama');
    assert.deepEqual(await lastTo(MERCHANT), texts.en.registered('Duka La Mama'));
    const merchant = await f.database.handle.db.selectFrom('merchants').selectAll().where('phone', '=', MERCHANT).executeTakeFirstOrThrow();
    assert.equal(merchant.business_name, 'Duka La Mama');
  });

  test('one-line invoice, confirmed with the button: INV-0001 created, the customer gets it (by SMS: never wrote to us)', async () => {
    await say(MERCHANT, 'invoice 0733 000 001 KES 1,500 2 bags of flour');
    const confirmation = await lastTo(MERCHANT);
    assert.equal(confirmation.type, 'buttons');
    assert.deepEqual(confirmation.type === 'buttons' ? confirmation.buttons.map((b) => b.id) : [], ['confirm_send', 'cancel_draft']);
    await tap(MERCHANT, 'confirm_send', 'Send');
    const [invoice] = await invoices(MERCHANT);
    assert.equal(invoice?.number, 1);
    assert.equal(invoice?.customer_phone, CUSTOMER);
    assert.equal(Number(invoice?.amount), 1500);
    assert.deepEqual(await lastTo(MERCHANT), texts.en.invoiceCreated(1, CUSTOMER, 1500));
    const toCustomer = await messagesTo(CUSTOMER);
    assert.equal(toCustomer.length, 1);
    assert.equal(toCustomer[0]!.kind, 'invoice');
    await f.deps.outbox.idle();
    const sms = f.sms.filter((s) => s.to === `+${CUSTOMER}`);
    assert.equal(sms.length, 1);
    assert.match(sms[0]!.message, /INV-0001/);
    const events = await f.database.handle.db.selectFrom('invoice_events').select(['actor', 'type']).where('invoice_id', '=', invoice!.id).orderBy('id').execute();
    assert.deepEqual(events.map((e) => e.type), ['created', 'sent']);
    assert.equal(events[0]!.actor, `merchant:${MERCHANT}`);
  });

  test('the guided flow: new -> phone -> amount -> description -> yes: INV-0002', async () => {
    await say(MERCHANT, 'new');
    assert.deepEqual(await lastTo(MERCHANT), texts.en.askCustomer());
    await say(MERCHANT, '0712 345');
    assert.deepEqual(await lastTo(MERCHANT), texts.en.invalidPhone());
    await say(MERCHANT, '+254 733 000 001');
    await say(MERCHANT, '1.5k');
    await say(MERCHANT, 'x'.repeat(101));
    assert.deepEqual(await lastTo(MERCHANT), texts.en.invalidDescription('description_too_long'));
    await say(MERCHANT, 'Sugar');
    assert.equal((await lastTo(MERCHANT)).type, 'buttons');
    await say(MERCHANT, 'yes');
    assert.deepEqual((await invoices(MERCHANT)).map((i) => i.number), [1, 2]);
  });

  test('the duplicate guard names the recent identical invoice', async () => {
    await say(MERCHANT, 'invoice 0733000001 1500 flour again');
    // INV-0002 (1.5k) is the latest unpaid invoice to this customer for KES 1,500.
    assert.match(bodyOf(await lastTo(MERCHANT)), /INV-0002/);
    await say(MERCHANT, 'no');
    assert.equal((await invoices(MERCHANT)).length, 2);
  });

  test('list, status (any spelling), summary', async () => {
    await say(MERCHANT, 'list');
    const list = bodyOf(await lastTo(MERCHANT));
    assert.match(list, /INV-0001/);
    assert.match(list, /INV-0002/);
    for (const spelling of ['1', 'inv-0001', 'INV-0001']) {
      await say(MERCHANT, `status ${spelling}`);
      assert.match(bodyOf(await lastTo(MERCHANT)), /INV-0001/);
    }
    await say(MERCHANT, 'summary');
    assert.deepEqual(await lastTo(MERCHANT), texts.en.summary({ sent: 2, paid: 0, outstandingAmount: 3000, collectedThisMonth: 0, overdue: 0 }));
  });

  test('remind re-sends the invoice to the customer; cancel cancels, tells the customer, refuses paid invoices', async () => {
    const before = (await messagesTo(CUSTOMER)).length;
    await say(MERCHANT, 'remind 1');
    assert.deepEqual(await lastTo(MERCHANT), texts.en.reminderSent(1, CUSTOMER));
    const afterRemind = await messagesTo(CUSTOMER);
    assert.equal(afterRemind.length, before + 1);
    assert.equal(afterRemind.at(-1)!.kind, 'reminder');

    await say(MERCHANT, 'cancel INV-0002');
    assert.deepEqual(await lastTo(MERCHANT), texts.en.invoiceCancelled(2));
    assert.equal((await invoices(MERCHANT))[1]!.status, 'cancelled');
    assert.equal((await messagesTo(CUSTOMER)).at(-1)!.kind, 'notice');

    await f.database.handle.db.updateTable('invoices').set({ status: 'paid' }).where('id', '=', (await invoices(MERCHANT))[0]!.id).execute();
    await say(MERCHANT, 'cancel 1');
    assert.deepEqual(await lastTo(MERCHANT), texts.en.cannotCancel(1, 'paid'));
    assert.equal((await invoices(MERCHANT))[0]!.status, 'paid');
    const types = (await f.database.handle.db.selectFrom('invoice_events').select('type').execute()).map((e) => e.type);
    assert.ok(types.includes('reminded') && types.includes('cancelled'));
  });

  test('Swahili: lugha sw, and every reply after it is in Swahili', async () => {
    await say(MERCHANT, 'lugha sw');
    assert.deepEqual(await lastTo(MERCHANT), texts.sw.languageSet());
    await say(MERCHANT, 'msaada');
    assert.deepEqual(await lastTo(MERCHANT), texts.sw.help());
    await say(MERCHANT, 'language en');
    assert.deepEqual(await lastTo(MERCHANT), texts.en.languageSet());
  });
});

describe('isolation, customers, concurrency, expiry', () => {
  test('another merchant cannot see or act on INV-0001: it looks exactly like not found', async () => {
    await say(OTHER_MERCHANT, 'hello');
    await say(OTHER_MERCHANT, 'Other Shop');
    for (const command of ['status 1', 'remind 1', 'cancel 1']) {
      await say(OTHER_MERCHANT, command);
      assert.deepEqual(await lastTo(OTHER_MERCHANT), texts.en.invoiceNotFound(1));
    }
    await say(OTHER_MERCHANT, 'status 999');
    assert.deepEqual(await lastTo(OTHER_MERCHANT), texts.en.invoiceNotFound(999));
  });

  test('the customer who writes pay is answered on the customer side and not onboarded', async () => {
    // INV-0001 was marked paid above: give the customer an unpaid one.
    await say(MERCHANT, 'invoice 0733000001 700 eggs');
    await say(MERCHANT, 'yes');
    await say(CUSTOMER, 'pay');
    const answer = bodyOf(await lastTo(CUSTOMER));
    assert.match(answer, /INV-0003/);
    const merchantRow = await f.database.handle.db.selectFrom('merchants').select('id').where('phone', '=', CUSTOMER).executeTakeFirst();
    assert.equal(merchantRow, undefined);
  });

  test('five confirmations of one draft at once create exactly one invoice, numbered without gaps', async () => {
    await say(MERCHANT, 'invoice 0733000001 999 milk');
    const answers = await Promise.all(Array.from({ length: 5 }, () => say(MERCHANT, 'yes')));
    assert.ok(answers.every((r) => r.status === 200));
    const numbers = (await invoices(MERCHANT)).map((i) => i.number);
    assert.deepEqual(numbers, [1, 2, 3, 4]);
  });

  test('a draft left for 30 minutes expires; the next message says so', async () => {
    await say(MERCHANT, 'new');
    clock += 31 * 60_000;
    await say(MERCHANT, '0733000001');
    const all = await messagesTo(MERCHANT);
    assert.deepEqual(all.at(-2)!.content.message, texts.en.draftExpired());
    const state = await f.database.handle.db.selectFrom('conversations').select('state').where('phone', '=', MERCHANT).executeTakeFirstOrThrow();
    assert.equal((state.state as { step: string }).step, 'idle');
  });

  test('media, stickers and unknown commands get a short answer and change nothing', async () => {
    await f.post(envelope({ messages: [{ from: MERCHANT, id: wamid(), timestamp: String(Math.floor(clock / 1000)), type: 'sticker', sticker: { id: 'm' } }] }));
    assert.deepEqual(await lastTo(MERCHANT), texts.en.onlyTextAndButtons());
    await say(MERCHANT, 'abracadabra');
    assert.deepEqual(await lastTo(MERCHANT), texts.en.unknownCommand());
  });

  test('a stored state of an unknown version resets to the menu with an apology', async () => {
    await f.database.handle.db.updateTable('conversations').set({ state: JSON.stringify({ version: 42, step: 'warp' }) }).where('phone', '=', MERCHANT).execute();
    await say(MERCHANT, 'list');
    const all = await messagesTo(MERCHANT);
    assert.deepEqual(all.at(-2)!.content.message, texts.en.stateReset());
  });
});

describe('edges found in review (each test failed on the code before its fix)', () => {
  async function onboard(phone: string, name: string) {
    await say(phone, 'hi');
    await say(phone, name);
  }

  test('a customer with 12 unpaid invoices is told 12, and shown the latest 10', async () => {
    const M = '254722100012';
    const CUSTOMER = '254733100012';
    await onboard(M, 'Twelve Shop');
    const merchant = await f.database.handle.db.selectFrom('merchants').select('id').where('phone', '=', M).executeTakeFirstOrThrow();
    await f.database.handle.db
      .insertInto('invoices')
      .values(Array.from({ length: 12 }, (_, i) => ({ merchant_id: merchant.id, number: i + 1, customer_phone: CUSTOMER, amount: '100', description: `item ${i + 1}`, status: 'sent' as const, created_at: new Date(clock - (12 - i) * 60_000) })))
      .execute();
    await say(CUSTOMER, 'pay');
    const reply = await lastTo(CUSTOMER);
    assert.equal(reply.type, 'list');
    assert.match(JSON.stringify(reply), /You have 12 unpaid invoices\. Here are the first 10\./);
    assert.equal(reply.type === 'list' ? reply.sections.flatMap((section) => section.rows).length : 0, 10);
  });

  test('a customer with INV-0001 from two merchants can pay each one (no endless "choose invoice" loop)', async () => {
    const A = '254722100001';
    const B = '254722100002';
    const CUSTOMER = '254733100001';
    await onboard(A, 'Shop A');
    await onboard(B, 'Shop B');
    await say(A, 'invoice 0733100001 500 eggs');
    await say(A, 'yes');
    await say(B, 'invoice 0733100001 800 milk');
    await say(B, 'yes');

    // The customer types PAY: "with several, a list to choose from".
    await say(CUSTOMER, 'pay');
    const list = await lastTo(CUSTOMER);
    assert.equal(list.type, 'list');
    const rows = list.type === 'list' ? list.sections.flatMap((s) => s.rows) : [];
    // The customer taps the (only) row the bot offered: it must lead somewhere, not to the same list again.
    await tap(CUSTOMER, rows[0]!.id, rows[0]!.id, 'list_reply');
    const afterTap = await lastTo(CUSTOMER);
    assert.notDeepEqual(afterTap, list, 'tapping the row the bot offered answers with the very same list: the customer can never pay');
    assert.equal(rows.length, 2, `"You have 2 unpaid invoices" but the list offers ${rows.length} row(s)`);
  });

  test('a merchant past INV-9999 can still use status / remind / cancel on the invoice the bot just numbered', async () => {
    const M = '254722100003';
    await onboard(M, 'Busy Shop');
    await f.database.handle.db.updateTable('merchants').set({ next_invoice_number: 10000 }).where('phone', '=', M).execute();
    await say(M, 'invoice 0733100002 1500 cement');
    await say(M, 'yes');
    assert.deepEqual(await lastTo(M), texts.en.invoiceCreated(10000, '254733100002', 1500));
    for (const ref of ['10000', 'INV-10000']) {
      await say(M, `status ${ref}`);
      assert.notDeepEqual(await lastTo(M), texts.en.invalidInvoiceNumber('status'), `status ${ref}: "Which invoice?" for INV-10000 the bot itself created`);
    }
  });
});
