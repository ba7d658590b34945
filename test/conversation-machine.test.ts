/**
 * The pure conversation machine: every state x every kind of input, the flows, expiry,
 * resets, the duplicate guard, languages, and random sequences (fast-check).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { ConversationStateSchema, converse, IDLE } from '../src/domain/conversation/machine.js';
import type { ConversationState, Effect, MachineContext, MachineInput } from '../src/domain/conversation/types.js';
import { DRAFT_TTL_MS } from '../src/domain/conversation/types.js';
import { MessageContent } from '../src/domain/outbound.js';

const NOW = new Date('2026-11-22T09:00:00.000Z');
const touchedAt = new Date(NOW.getTime() - 60_000).toISOString();

const states: Record<ConversationState['step'], ConversationState> = {
  idle: IDLE,
  awaiting_business_name: { version: 1, step: 'awaiting_business_name', askedAt: touchedAt },
  awaiting_customer: { version: 1, step: 'awaiting_customer', draft: {}, touchedAt },
  awaiting_amount: { version: 1, step: 'awaiting_amount', draft: { customerPhone: '254712345678' }, touchedAt },
  awaiting_description: { version: 1, step: 'awaiting_description', draft: { customerPhone: '254712345678', amount: 1500 }, touchedAt },
  awaiting_confirmation: {
    version: 1,
    step: 'awaiting_confirmation',
    draft: { customerPhone: '254712345678', amount: 1500, description: '2 bags of flour' },
    duplicateOf: null,
    touchedAt,
  },
};

function context(overrides: Partial<MachineContext> = {}): MachineContext {
  return { now: NOW, language: 'en', isMerchant: true, isCustomer: false, recentInvoices: [], maxAmount: 250_000, ...overrides };
}

const text = (t: string): MachineInput => ({ kind: 'text', text: t });
const button = (id: string, title = id): MachineInput => ({ kind: 'button', id, title });

const inputs: Record<string, MachineInput> = {
  'empty text': text(''),
  'a phone': text('0712 345 678'),
  'an amount': text('KES 1,500'),
  'a decimal amount': text('1500.50'),
  'a description': text('2 bags of flour'),
  '5,000 characters': text('x'.repeat(5_000)),
  'emoji only': text('😀🎉'),
  'help': text('help'),
  'msaada': text('MSAADA'),
  'new': text('new'),
  'one-line invoice': text('invoice 0712345678 1500 flour'),
  'one-line invoice, bad phone': text('invoice 12345 1500 flour'),
  'list': text('list'),
  'status 7': text('status 7'),
  'status x': text('status x'),
  'remind inv-0007': text('remind inv-0007'),
  'cancel INV-0007': text('cancel INV-0007'),
  'cancel': text('cancel'),
  'stop': text('stop'),
  'summary': text('summary'),
  'language sw': text('language sw'),
  'lugha en': text('lugha en'),
  'yes': text('yes'),
  'ndio': text('ndio'),
  'no': text('no'),
  'hapana': text('hapana'),
  'pay': text('pay'),
  'unknown words': text('what is this'),
  'button confirm_send': button('confirm_send', 'Send'),
  'button cancel_draft': button('cancel_draft', 'Cancel'),
  'button new_invoice': button('new_invoice'),
  'button list': button('list'),
  'button help': button('help'),
  'button lang:sw': button('lang:sw'),
  'button pay:INV-0007': button('pay:INV-0007', 'Pay now'),
  'button from an old message': button('something_old_42'),
  'list reply pay:INV-0002': { kind: 'list', id: 'pay:INV-0002', title: 'INV-0002' },
  'image': { kind: 'other', type: 'image' },
  'sticker': { kind: 'other', type: 'sticker' },
  'location': { kind: 'other', type: 'location' },
  'reaction': { kind: 'other', type: 'reaction' },
};

function replies(effects: readonly Effect[]): MessageContent[] {
  return effects.flatMap((e) => (e.type === 'reply' ? [e.message] : []));
}

function checkTransition(state: ConversationState | unknown, input: MachineInput, ctx: MachineContext) {
  const result = converse(state, input, ctx);
  assert.ok(ConversationStateSchema.safeParse(result.state).success, `valid state: ${JSON.stringify(result.state)}`);
  assert.ok(result.effects.length > 0, 'every message gets an answer (a reply or an effect that replies)');
  for (const message of replies(result.effects)) assert.ok(MessageContent.safeParse(message).success, `reply within WhatsApp limits: ${JSON.stringify(message).slice(0, 200)}`);
  assert.deepEqual(structuredClone(result.state), result.state);
  assert.deepEqual(JSON.parse(JSON.stringify(result.state)), result.state);
  return result;
}

describe('every state x every kind of input keeps a valid state and answers', () => {
  for (const role of ['merchant', 'newcomer', 'customer'] as const) {
    for (const [stepName, state] of Object.entries(states)) {
      for (const [inputName, input] of Object.entries(inputs)) {
        for (const language of ['en', 'sw'] as const) {
          test(`${role} / ${stepName} / ${inputName} / ${language}`, () => {
            checkTransition(state, input, context({ language, isMerchant: role === 'merchant', isCustomer: role === 'customer' }));
          });
        }
      }
    }
  }
});

describe('onboarding', () => {
  test('a new number is asked for its business name, then registered', () => {
    const first = converse({ version: 0 }, text('hi'), context({ isMerchant: false }));
    assert.equal(first.state.step, 'awaiting_business_name');
    const second = converse(first.state, text('  Mama   Mboga  Shop '), context({ isMerchant: false }));
    assert.equal(second.state.step, 'idle');
    assert.deepEqual(second.effects[0], { type: 'register_merchant', businessName: 'Mama Mboga Shop' });
  });

  test('a business name over 60 characters is refused and asked again', () => {
    const result = converse(states.awaiting_business_name, text('x'.repeat(61)), context({ isMerchant: false }));
    assert.equal(result.state.step, 'awaiting_business_name');
    assert.ok(!result.effects.some((e) => e.type === 'register_merchant'));
  });

  test('the business-name question expires as a draft does: a customer asked it once, replying "ok" to a new invoice a week later, is not registered as business "ok" (was a defect)', () => {
    const weekAgo = { version: 1, step: 'awaiting_business_name', askedAt: new Date(NOW.getTime() - 7 * 86_400_000).toISOString() } as const;
    for (const reply of ['ok', 'Asante', 'nimelipa', 'list', 'status 7']) {
      const result = converse(weekAgo, text(reply), context({ isMerchant: false, isCustomer: true }));
      assert.ok(!result.effects.some((e) => e.type === 'register_merchant'), `"${reply}" registered a business`);
      assert.equal(result.state.step, 'idle', reply);
    }
    assert.deepEqual(converse(weekAgo, text('ok'), context({ isMerchant: false, isCustomer: true })).effects, [{ type: 'customer_help' }]);
    // A newcomer who is nobody's customer is simply asked again, the question fresh.
    const again = converse(weekAgo, text('Mama Mboga'), context({ isMerchant: false }));
    assert.ok(!again.effects.some((e) => e.type === 'register_merchant'));
    assert.deepEqual(again.state, { version: 1, step: 'awaiting_business_name', askedAt: NOW.toISOString() });
    // Stored before the question had a time: expired too.
    const old = converse({ version: 1, step: 'awaiting_business_name' }, text('ok'), context({ isMerchant: false, isCustomer: true }));
    assert.deepEqual(old.effects, [{ type: 'customer_help' }]);
  });

  test('within 30 minutes of the question (each answer renews it), the answer is the business name', () => {
    const asked = converse({ version: 0 }, text('hi'), context({ isMerchant: false }));
    assert.deepEqual(asked.state, { version: 1, step: 'awaiting_business_name', askedAt: NOW.toISOString() });
    const later = (ms: number) => context({ isMerchant: false, isCustomer: true, now: new Date(NOW.getTime() + ms) });
    const invalid = converse(asked.state, text('x'.repeat(61)), later(DRAFT_TTL_MS - 1_000));
    assert.equal(invalid.state.step, 'awaiting_business_name');
    const named = converse(invalid.state, text('Mama Mboga'), later(2 * DRAFT_TTL_MS - 2_000));
    assert.deepEqual(named.effects[0], { type: 'register_merchant', businessName: 'Mama Mboga' });
  });

  test('a customer who writes pay is routed to the customer side, not onboarded', () => {
    for (const input of [text('pay'), text('LIPA'), button('pay:INV-0007')]) {
      const result = converse({ version: 0 }, input, context({ isMerchant: false, isCustomer: true }));
      assert.equal(result.state.step, 'idle');
      assert.equal(result.effects[0]?.type, 'customer_pay');
    }
    const plain = converse({ version: 0 }, text('hello'), context({ isMerchant: false, isCustomer: true }));
    assert.deepEqual(plain.effects, [{ type: 'customer_help' }]);
  });

  test('pay:INV-0007 carries the invoice number', () => {
    const result = converse(IDLE, button('pay:INV-0007'), context({ isMerchant: false, isCustomer: true }));
    assert.deepEqual(result.effects, [{ type: 'customer_pay', number: 7 }]);
  });
});

describe('the guided flow', () => {
  test('phone -> amount -> description -> confirm -> create_invoice', () => {
    let state: unknown = IDLE;
    for (const [input, step] of [
      [text('new'), 'awaiting_customer'],
      [text('0712 345 678'), 'awaiting_amount'],
      [text('Ksh1,500'), 'awaiting_description'],
      [text('2 bags of flour'), 'awaiting_confirmation'],
    ] as const) {
      const result = converse(state, input, context());
      assert.equal(result.state.step, step);
      state = result.state;
    }
    const confirmed = converse(state, button('confirm_send'), context());
    assert.deepEqual(confirmed.effects, [{ type: 'create_invoice', draft: { customerPhone: '254712345678', amount: 1500, description: '2 bags of flour' } }]);
    assert.equal(confirmed.state.step, 'idle');
  });

  test('each step re-asks with a hint and keeps the draft on a bad answer', () => {
    for (const [step, bad] of [
      ['awaiting_customer', '12345'],
      ['awaiting_amount', '1500.50'],
      ['awaiting_amount', '0'],
      ['awaiting_amount', '300000'],
      ['awaiting_description', 'x'.repeat(101)],
    ] as const) {
      const result = converse(states[step], text(bad), context());
      assert.equal(result.state.step, step, `${step} / ${bad}`);
      assert.deepEqual((result.state as { draft: unknown }).draft, (states[step] as { draft: unknown }).draft);
      assert.equal(replies(result.effects).length, 1);
    }
  });

  test('yes/ndio/send confirm; no/hapana/cancel and the cancel button drop the draft', () => {
    for (const word of ['yes', 'ndio', 'send', 'SAWA']) {
      assert.equal(converse(states.awaiting_confirmation, text(word), context()).effects[0]?.type, 'create_invoice', word);
    }
    for (const input of [text('no'), text('hapana'), text('cancel'), text('stop'), button('cancel_draft')]) {
      const result = converse(states.awaiting_confirmation, input, context());
      assert.equal(result.state.step, 'idle');
      assert.ok(!result.effects.some((e) => e.type === 'create_invoice'));
    }
  });

  test('cancel or stop inside any step of the flow returns to the menu', () => {
    for (const step of ['awaiting_customer', 'awaiting_amount', 'awaiting_description'] as const) {
      assert.equal(converse(states[step], text('stop'), context()).state.step, 'idle');
    }
  });

  test('the one-line command goes straight to confirmation', () => {
    const result = converse(IDLE, text('invoice 0712 345 678 KES 1,500 two bags of flour'), context());
    assert.equal(result.state.step, 'awaiting_confirmation');
    assert.deepEqual((result.state as { draft: unknown }).draft, { customerPhone: '254712345678', amount: 1500, description: 'two bags of flour' });
  });

  test('a confirm button from an old message, with no draft, changes nothing', () => {
    const result = converse(IDLE, button('confirm_send'), context());
    assert.equal(result.state.step, 'idle');
    assert.ok(!result.effects.some((e) => e.type === 'create_invoice'));
  });
});

describe('duplicate guard', () => {
  const draftInput = text('invoice 0712345678 1500 flour');
  test('an unpaid invoice with the same customer and amount in the last 10 minutes is named', () => {
    const recent = [{ number: 7, customerPhone: '254712345678', amount: 1500, status: 'sent' as const, createdAt: new Date(NOW.getTime() - 5 * 60_000) }];
    const result = converse(IDLE, draftInput, context({ recentInvoices: recent }));
    assert.equal((result.state as { duplicateOf: number | null }).duplicateOf, 7);
    const confirmed = converse(result.state, text('yes'), context({ recentInvoices: recent }));
    assert.equal(confirmed.effects[0]?.type, 'create_invoice', 'confirming sends a second one on purpose');
  });
  test('older, paid, or different ones do not trigger it', () => {
    for (const recent of [
      { number: 7, customerPhone: '254712345678', amount: 1500, status: 'sent' as const, createdAt: new Date(NOW.getTime() - 11 * 60_000) },
      { number: 7, customerPhone: '254712345678', amount: 1500, status: 'paid' as const, createdAt: new Date(NOW.getTime() - 60_000) },
      { number: 7, customerPhone: '254712345678', amount: 1501, status: 'sent' as const, createdAt: new Date(NOW.getTime() - 60_000) },
      { number: 7, customerPhone: '254712345679', amount: 1500, status: 'sent' as const, createdAt: new Date(NOW.getTime() - 60_000) },
    ]) {
      const result = converse(IDLE, draftInput, context({ recentInvoices: [recent] }));
      assert.equal((result.state as { duplicateOf: number | null }).duplicateOf, null);
    }
  });
});

describe('commands', () => {
  test('status, remind and cancel name the same invoice however it is spelled', () => {
    for (const ref of ['7', 'inv-0007', 'INV-0007']) {
      assert.deepEqual(converse(IDLE, text(`status ${ref}`), context()).effects, [{ type: 'show_invoice', number: 7 }]);
      assert.deepEqual(converse(IDLE, text(`remind ${ref}`), context()).effects, [{ type: 'remind_invoice', number: 7 }]);
      assert.deepEqual(converse(IDLE, text(`cancel ${ref}`), context()).effects, [{ type: 'cancel_invoice', number: 7 }]);
    }
  });
  test('list and summary', () => {
    assert.deepEqual(converse(IDLE, text('list'), context()).effects, [{ type: 'list_invoices' }]);
    assert.deepEqual(converse(IDLE, text('summary'), context()).effects, [{ type: 'show_summary' }]);
  });
  test('language switches and the answer is already in the new language', () => {
    const result = converse(IDLE, text('lugha sw'), context());
    assert.deepEqual(result.effects[0], { type: 'set_language', language: 'sw' });
    const english = converse(IDLE, text('language en'), context({ language: 'sw' }));
    const swahili = converse(IDLE, text('lugha sw'), context({ language: 'en' }));
    assert.notDeepEqual(replies(english.effects)[0], replies(swahili.effects)[0]);
  });
  test('help inside a draft answers and keeps the draft', () => {
    const result = converse(states.awaiting_amount, text('help'), context());
    assert.equal(result.state.step, 'awaiting_amount');
  });
});

describe('stored state', () => {
  test('an unknown version or a corrupt state resets to the menu with an apology', () => {
    for (const stored of [{ version: 99, step: 'idle' }, { version: 1, step: 'flying' }, 'garbage', null, 42, { version: 1, step: 'awaiting_amount', draft: {} }]) {
      const result = converse(stored, text('list'), context());
      assert.ok(ConversationStateSchema.safeParse(result.state).success);
      assert.equal(result.effects[0]?.type, 'reply', `apology first for ${JSON.stringify(stored)}`);
    }
  });
  test('a brand-new row ({version: 0}) is not apologised for', () => {
    const result = converse({ version: 0 }, text('list'), context());
    assert.deepEqual(result.effects, [{ type: 'list_invoices' }]);
  });
  test('a draft silent for 30 minutes expires; the message is handled from the menu', () => {
    const old = { ...states.awaiting_amount, touchedAt: new Date(NOW.getTime() - DRAFT_TTL_MS - 1_000).toISOString() };
    const result = converse(old, text('list'), context());
    assert.equal(result.effects[0]?.type, 'reply', 'says the draft expired');
    assert.deepEqual(result.effects.slice(1), [{ type: 'list_invoices' }]);
    const fresh = { ...states.awaiting_amount, touchedAt: new Date(NOW.getTime() - DRAFT_TTL_MS + 1_000).toISOString() };
    assert.equal(converse(fresh, text('1500'), context()).state.step, 'awaiting_description');
  });
  test('every state survives a JSON and a structuredClone round trip unchanged', () => {
    for (const state of Object.values(states)) {
      assert.deepEqual(JSON.parse(JSON.stringify(state)), state);
      assert.deepEqual(structuredClone(state), state);
      assert.ok(ConversationStateSchema.safeParse(JSON.parse(JSON.stringify(state))).success);
    }
  });
});

describe('by SMS (the sender is only the network\'s word): pay, read and answer, never change a business', () => {
  const WRITES = new Set(['register_merchant', 'create_invoice', 'remind_invoice', 'cancel_invoice', 'dashboard_link']);
  const sms = (overrides: Partial<MachineContext> = {}) => context({ channel: 'sms', ...overrides });
  const flow = (state: ConversationState) => ({ step: state.step, draft: 'draft' in state ? state.draft : null });
  const texts = (effects: readonly Effect[]) => replies(effects).map((m) => JSON.stringify(m));
  const REFUSED = /only on WhatsApp/;
  const REGISTER = /register your business, please message us on WhatsApp/;

  for (const role of ['merchant', 'newcomer', 'customer'] as const) {
    for (const [stepName, state] of Object.entries(states)) {
      for (const [inputName, input] of Object.entries(inputs)) {
        test(`${role} / ${stepName} / ${inputName}: no write, the flow as it was`, () => {
          const result = checkTransition(state, input, sms({ isMerchant: role === 'merchant', isCustomer: role === 'customer' }));
          assert.deepEqual(result.effects.filter((e) => WRITES.has(e.type)), []);
          assert.deepEqual(flow(result.state), flow(state));
        });
      }
    }
  }

  test('a merchant\'s one-line invoice, new, remind, cancel and dashboard are refused with the pointer; nothing else happens', () => {
    for (const input of [text('invoice 0712345678 1500 flour'), text('new'), button('new_invoice'), text('remind 7'), text('cancel 7'), text('dashboard')]) {
      const result = converse(IDLE, input, sms());
      assert.deepEqual(result.state, IDLE);
      assert.equal(result.effects.length, 1, JSON.stringify(input));
      assert.match(texts(result.effects)[0]!, REFUSED);
    }
    const swahili = converse(IDLE, text('cancel 7'), sms({ language: 'sw' }));
    assert.match(texts(swahili.effects)[0]!, /WhatsApp pekee/);
  });

  test('a draft begun on WhatsApp is neither confirmed nor moved by SMS, and goes on there', () => {
    for (const [stepName, input] of [['awaiting_confirmation', text('yes')], ['awaiting_confirmation', button('confirm_send')], ['awaiting_customer', text('0712345678')], ['awaiting_amount', text('1500')], ['awaiting_description', text('flour')], ['awaiting_amount', text('cancel')]] as const) {
      const state = states[stepName];
      const result = converse(state, input, sms());
      assert.deepEqual(result.state, state, `${stepName} ${JSON.stringify(input)}`);
      assert.match(texts(result.effects).at(-1)!, REFUSED);
    }
    const onWhatsApp = converse(states.awaiting_confirmation, text('yes'), context());
    assert.equal(onWhatsApp.effects[0]?.type, 'create_invoice');
  });

  test('reads answer by SMS, from the menu or beside a WhatsApp draft (kept as it was)', () => {
    assert.deepEqual(converse(IDLE, text('list'), sms()).effects, [{ type: 'list_invoices' }]);
    assert.deepEqual(converse(IDLE, text('summary'), sms()).effects, [{ type: 'show_summary' }]);
    assert.deepEqual(converse(IDLE, text('status 7'), sms()).effects, [{ type: 'show_invoice', number: 7 }]);
    const beside = converse(states.awaiting_confirmation, text('status 7'), sms());
    assert.deepEqual(beside.effects, [{ type: 'show_invoice', number: 7 }]);
    assert.deepEqual(beside.state, states.awaiting_confirmation);
    // On WhatsApp the same text inside the confirmation is the flow's hint.
    assert.equal(converse(states.awaiting_confirmation, text('status 7'), context()).effects[0]?.type, 'reply');
    // Where the flow would take the words as its answer (a description takes any text), a read by SMS is still a read.
    for (const [input, effect] of [['list', { type: 'list_invoices' }], ['status 7', { type: 'show_invoice', number: 7 }], ['orodha', { type: 'list_invoices' }], ['summary', { type: 'show_summary' }]] as const) {
      const result = converse(states.awaiting_description, text(input), sms());
      assert.deepEqual(result.effects, [effect], input);
      assert.deepEqual(result.state, states.awaiting_description);
    }
    assert.equal(converse(states.awaiting_description, text('status 7'), context()).state.step, 'awaiting_confirmation', 'on WhatsApp it is the description');
  });

  test('paying, help and language work by SMS for everyone, inside a draft too', () => {
    for (const ctx of [sms(), sms({ isMerchant: false, isCustomer: true })]) {
      assert.deepEqual(converse(IDLE, text('pay'), ctx).effects, [{ type: 'customer_pay', number: null }]);
      assert.equal(converse(IDLE, text('lugha sw'), ctx).effects[0]?.type, 'set_language');
    }
    const pay = converse(states.awaiting_amount, text('pay 7'), sms());
    assert.deepEqual(pay.effects, [{ type: 'customer_pay', number: 7 }]);
    const help = converse(states.awaiting_amount, text('help'), sms());
    assert.equal(help.state.step, 'awaiting_amount');
    assert.doesNotMatch(texts(help.effects).join(' '), REFUSED);
    assert.deepEqual(converse({ version: 0 }, text('hello'), sms({ isMerchant: false, isCustomer: true })).effects, [{ type: 'customer_help' }]);
  });

  test('a number that is nobody cannot start or finish a registration by SMS', () => {
    const first = converse({ version: 0 }, text('hi'), sms({ isMerchant: false }));
    assert.deepEqual(first.state, IDLE);
    assert.match(texts(first.effects)[0]!, REGISTER);
    const named = converse(states.awaiting_business_name, text('Mama Mboga'), sms({ isMerchant: false }));
    assert.deepEqual(named.state, states.awaiting_business_name);
    assert.ok(!named.effects.some((e) => e.type === 'register_merchant'));
    assert.match(texts(named.effects)[0]!, REGISTER);
  });

  test('the turn\'s own notices stand: an expired draft is said, and the refusal follows', () => {
    const stale = { ...states.awaiting_confirmation, touchedAt: new Date(NOW.getTime() - DRAFT_TTL_MS - 1).toISOString() };
    const result = converse(stale, text('invoice 0712345678 1500 flour'), sms());
    assert.deepEqual(result.state, IDLE);
    assert.equal(result.effects.length, 2);
    assert.match(texts(result.effects)[0]!, /expired/);
    assert.match(texts(result.effects)[1]!, REFUSED);
  });

  test('random sequences on both channels: an SMS turn never writes for a merchant nor moves a flow (fast-check)', () => {
    const anyInput: fc.Arbitrary<MachineInput> = fc.oneof(fc.constantFrom(...Object.values(inputs)), fc.string({ maxLength: 60 }).map(text));
    fc.assert(
      fc.property(fc.array(fc.tuple(anyInput, fc.boolean()), { minLength: 1, maxLength: 20 }), fc.boolean(), fc.boolean(), (steps, isMerchant, isCustomer) => {
        let state: unknown = { version: 0 };
        for (const [input, bySms] of steps) {
          const ctx = context({ isMerchant, isCustomer, channel: bySms ? 'sms' : 'whatsapp' });
          const result = checkTransition(state, input, ctx);
          if (bySms) {
            assert.deepEqual(result.effects.filter((e) => WRITES.has(e.type)), []);
            const start = (state as { version?: number }).version === 0 ? IDLE : (state as ConversationState);
            assert.deepEqual(flow(result.state), flow(start));
          }
          state = JSON.parse(JSON.stringify(result.state));
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('random sequences (fast-check)', () => {
  const anyInput: fc.Arbitrary<MachineInput> = fc.oneof(
    fc.constantFrom(...Object.values(inputs)),
    fc.string({ maxLength: 200 }).map(text),
    fc.string({ maxLength: 40 }).map((id) => button(id)),
    fc.constantFrom('image', 'audio', 'unsupported').map((type): MachineInput => ({ kind: 'other', type })),
  );
  test('never an invalid state, never an unanswered message', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(anyInput, fc.integer({ min: 0, max: 40 * 60_000 })), { minLength: 1, maxLength: 25 }),
        fc.boolean(),
        fc.boolean(),
        (steps, isMerchant, isCustomer) => {
          let state: unknown = { version: 0 };
          let clock = NOW.getTime();
          for (const [input, gap] of steps) {
            clock += gap;
            const result = checkTransition(state, input, context({ now: new Date(clock), isMerchant, isCustomer }));
            state = JSON.parse(JSON.stringify(result.state));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
