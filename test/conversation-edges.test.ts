/**
 * Conversation edges found in review, against CONVERSATION.md (each test failed on the code
 * before its fix): a one-line invoice with one bad part keeps the parts before it; media from
 * a newcomer changes nothing; "help" is not a business name; the configured maximum amount
 * and due days. (The end-to-end edges are in test/conversation-e2e.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
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
      const result = converse({ version: 1, step: 'awaiting_business_name', askedAt: NOW.toISOString() }, text(word), context({ isMerchant: false }));
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
