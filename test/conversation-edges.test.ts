/**
 * Conversation edges found in review, against CONVERSATION.md (each test failed on the code
 * before its fix): a one-line invoice with one bad part keeps the parts before it; two
 * merchants' invoices with the same number can each be paid from the customer's list;
 * numbers past INV-9999 are still read; media from a newcomer changes nothing; "help" is not
 * a business name.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createConversationHandler } from '../src/conversation/handler.js';
import { converse, IDLE } from '../src/domain/conversation/machine.js';
import type { ConversationState, Effect, MachineContext, MachineInput } from '../src/domain/conversation/types.js';
import type { MessageContent } from '../src/domain/outbound.js';
import { texts } from '../src/domain/texts.js';
import { envelope, wamid } from './fixtures/whatsapp.js';
import { startChannelFixture, type ChannelFixture } from './helpers/channel.js';

const NOW = new Date('2026-11-22T09:00:00.000Z');
function context(overrides: Partial<MachineContext> = {}): MachineContext {
  return { now: NOW, language: 'en', isMerchant: true, isCustomer: false, recentInvoices: [], maxAmount: 250_000, ...overrides };
}
const text = (t: string): MachineInput => ({ kind: 'text', text: t });
const replies = (effects: readonly Effect[]): MessageContent[] => effects.flatMap((e) => (e.type === 'reply' ? [e.message] : []));

describe('pure machine', () => {
  test('one-line invoice with a bad part: following the bot\'s own hint finishes the invoice (draft kept)', () => {
    // "Every step re-asks with a short, specific hint when the answer is not valid ... and keeps the draft."
    const cases: Array<[string, string, ConversationState['step']]> = [
      [`invoice 0712345678 1500 ${'x'.repeat(101)}`, '2 bags of flour', 'awaiting_confirmation'], // "Please send a shorter one."
      ['invoice 0712345678 1500.50 flour', '1500', 'awaiting_confirmation'], // "Send e.g. 1500 instead of 1500.50."
      ['invoice 0712 345 flour 1500', '0712 345 678', 'awaiting_amount'], // "Try 0712 345 678."
    ];
    for (const [oneLine, fix, expected] of cases) {
      const first = converse(IDLE, text(oneLine), context());
      assert.equal(replies(first.effects).length, 1, oneLine);
      const second = converse(first.state, text(fix), context());
      assert.notDeepEqual(replies(second.effects)[0], texts.en.unknownCommand(), `${oneLine} -> ${fix}: answered "I didn't get that"`);
      assert.equal(second.state.step, expected, `${oneLine} -> ${fix}`);
    }
  });

  test('help / msaada while being asked the business name shows help, not registered as business "help"', () => {
    for (const word of ['help', 'msaada', 'menu']) {
      const result = converse({ version: 1, step: 'awaiting_business_name' }, text(word), context({ isMerchant: false }));
      assert.ok(!result.effects.some((e) => e.type === 'register_merchant'), `"${word}" registered as the business name: ${JSON.stringify(result.effects[0])}`);
    }
  });

  test('media from a number that is not yet a merchant gets "I can only read text and buttons" and changes nothing', () => {
    // "Media, stickers, locations, reactions and other types get a polite "I can only read text and buttons" and change nothing."
    for (const type of ['image', 'sticker', 'reaction']) {
      const result = converse(IDLE, { kind: 'other', type }, context({ isMerchant: false }));
      assert.deepEqual(replies(result.effects), [texts.en.onlyTextAndButtons()], type);
      assert.equal(result.state.step, 'idle', `${type} started onboarding`);
    }
  });
});

describe('end to end (webhooks, shell, database)', () => {
  let clock = new Date('2026-11-22T07:00:00.000Z').getTime();
  const now = () => new Date(clock);
  let f: ChannelFixture;
  before(async () => {
    f = await startChannelFixture({ conversation: createConversationHandler({ now }), env: { DELIVERY_SAFETY_NET_SECONDS: '3600' } });
  });
  after(() => f.close());

  const say = (from: string, body: string) =>
    f.post(envelope({ contacts: [{ profile: { name: 'x' }, wa_id: from }], messages: [{ from, id: wamid(), timestamp: String(Math.floor(clock / 1000)), type: 'text', text: { body } }] }));
  const tap = (from: string, id: string, kind: 'button_reply' | 'list_reply' = 'button_reply') =>
    f.post(
      envelope({ messages: [{ from, id: wamid(), timestamp: String(Math.floor(clock / 1000)), type: 'interactive', interactive: { type: kind, [kind]: { id, title: id } } }] }),
    );
  async function lastTo(phone: string): Promise<MessageContent> {
    const rows = await f.database.handle.db.selectFrom('outbound_messages').select('content').where('recipient', '=', phone).orderBy('created_at').orderBy('id').execute();
    return (rows.at(-1)!.content as { message: MessageContent }).message;
  }
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
    await tap(CUSTOMER, rows[0]!.id, 'list_reply');
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

test('the confirmation shows the due date the configured days away (dueDays in the context)', () => {
  const draft = { customerPhone: '254712345678', amount: 1500, description: 'flour' };
  const seven = converse(IDLE, text('invoice 0712345678 1500 flour'), context());
  const fourteen = converse(IDLE, text('invoice 0712345678 1500 flour'), context({ dueDays: 14 }));
  // 2026-11-22 12:00 in Nairobi: due 2026-11-29 by default, 2026-12-06 with 14 days.
  assert.deepEqual(replies(seven.effects), [texts.en.confirm(draft, new Date('2026-11-29T00:00:00+03:00'), null)]);
  assert.deepEqual(replies(fourteen.effects), [texts.en.confirm(draft, new Date('2026-12-06T00:00:00+03:00'), null)]);
});

describe('configured limits (INVOICE_MAX_AMOUNT, INVOICE_DUE_DAYS), through the service as wired', () => {
  const clock = new Date('2026-11-22T07:00:00.000Z').getTime();
  let f: ChannelFixture;
  before(async () => {
    f = await startChannelFixture({ env: { INVOICE_MAX_AMOUNT: '1000', INVOICE_DUE_DAYS: '14', DELIVERY_SAFETY_NET_SECONDS: '3600' }, now: () => new Date(clock) });
  });
  after(() => f.close());
  const say = (from: string, body: string) =>
    f.post(envelope({ contacts: [{ profile: { name: 'x' }, wa_id: from }], messages: [{ from, id: wamid(), timestamp: String(Math.floor(clock / 1000)), type: 'text', text: { body } }] }));

  test('an amount over the configured maximum is refused with it; the due date is the configured days away', async () => {
    const M = '254722100077';
    await say(M, 'hi');
    await say(M, 'Config Shop');
    await say(M, 'invoice 0733100077 1500 flour');
    const rows = await f.database.handle.db.selectFrom('outbound_messages').select('content').where('recipient', '=', M).orderBy('created_at').orderBy('id').execute();
    const last = (rows.at(-1)!.content as { message: MessageContent }).message;
    assert.deepEqual(last, texts.en.invalidAmount('amount_too_large', 1000));
    await say(M, '900');
    await say(M, 'yes');
    const invoice = await f.database.handle.db.selectFrom('invoices').select(['amount', 'due_date']).where('customer_phone', '=', '254733100077').executeTakeFirstOrThrow();
    assert.equal(Number(invoice.amount), 900);
    const due = invoice.due_date instanceof Date ? invoice.due_date.toISOString().slice(0, 10) : String(invoice.due_date).slice(0, 10);
    // Sent 2026-11-22 10:00 in Nairobi: due 14 days later.
    assert.equal(due, '2026-12-06');
  });
});
