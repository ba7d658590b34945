/**
 * The merchant/customer conversation as a pure function:
 *   converse(storedState, input, context) -> { state, effects }
 * No I/O, no clock reads, no randomness: time and facts come in the context, and what must
 * happen (replies, invoices, language) goes out as effects for the shell to carry out.
 * A stored state that does not parse (unknown version, corrupt JSON) resets to the menu
 * with an apology; a draft silent for 30 minutes expires, and the message that finds it
 * expired is handled from the menu.
 */
import { z } from 'zod';
import { dueDateFor, nairobiMidnight } from '../invoice.js';
import type { MessageContent } from '../outbound.js';
import { parseAmount, parseCommand, parseDescription, parseInvoiceNumber, parsePhone, type Command } from '../parse.js';
import { texts } from '../texts.js';
import type { Texts } from '../texts.types.js';
import {
  DRAFT_TTL_MS,
  DUPLICATE_WINDOW_MS,
  STATE_VERSION,
  type CompleteDraft,
  type ConversationState,
  type Effect,
  type Language,
  type MachineContext,
  type MachineInput,
  type Transition,
} from './types.js';

const msisdn = z.string().regex(/^254(7|1)\d{8}$/);
const amount = z.number().int().min(1);
const description = z.string().min(1).max(400);
const touchedAt = z.iso.datetime();

export const ConversationStateSchema = z.discriminatedUnion('step', [
  z.object({ version: z.literal(STATE_VERSION), step: z.literal('idle') }),
  z.object({ version: z.literal(STATE_VERSION), step: z.literal('awaiting_business_name'), askedAt: touchedAt.optional() }),
  z.object({ version: z.literal(STATE_VERSION), step: z.literal('awaiting_customer'), draft: z.object({}), touchedAt }),
  // The description too when a one-line invoice gave a good one and a bad amount.
  z.object({ version: z.literal(STATE_VERSION), step: z.literal('awaiting_amount'), draft: z.object({ customerPhone: msisdn, description: description.optional() }), touchedAt }),
  z.object({
    version: z.literal(STATE_VERSION),
    step: z.literal('awaiting_description'),
    draft: z.object({ customerPhone: msisdn, amount }),
    touchedAt,
  }),
  z.object({
    version: z.literal(STATE_VERSION),
    step: z.literal('awaiting_confirmation'),
    draft: z.object({ customerPhone: msisdn, amount, description }),
    duplicateOf: z.number().int().min(1).nullable(),
    touchedAt,
  }),
]);

export const IDLE: ConversationState = { version: STATE_VERSION, step: 'idle' };

/** A stored state as the machine can use it, and whether it had to be reset. */
export function restoreState(stored: unknown): { state: ConversationState; reset: boolean } {
  const parsed = ConversationStateSchema.safeParse(stored);
  if (parsed.success) return { state: parsed.data as ConversationState, reset: false };
  // A brand-new row (the shell stores {version: 0}) is not a reset: there was nothing to lose.
  const fresh = typeof stored === 'object' && stored !== null && (stored as { version?: unknown }).version === 0;
  return { state: IDLE, reset: !fresh };
}

/** Business names: trimmed, inner whitespace collapsed, 1 to 60 characters. */
export function parseBusinessName(text: string): string | null {
  const name = text.replace(/\s+/g, ' ').trim();
  const length = [...name].length;
  return length >= 1 && length <= 60 ? name : null;
}

function isDraftStep(state: ConversationState): state is Extract<ConversationState, { touchedAt: string }> {
  return 'touchedAt' in state;
}

type Reply = (message: MessageContent) => Effect;
const reply: Reply = (message) => ({ type: 'reply', message });

/** Reads a button or list id as the command it stands for. */
function commandFromId(id: string): Command | 'confirm' | 'cancel_draft' | null {
  switch (id) {
    case 'new_invoice':
      return { kind: 'new_invoice' };
    case 'list':
      return { kind: 'list' };
    case 'help':
      return { kind: 'help' };
    case 'lang:en':
      return { kind: 'language', language: 'en' };
    case 'lang:sw':
      return { kind: 'language', language: 'sw' };
    case 'confirm_send':
      return 'confirm';
    case 'cancel_draft':
      return 'cancel_draft';
    default: {
      const pay = /^pay:(.+)$/i.exec(id);
      return pay === null ? null : { kind: 'pay', ref: pay[1]! };
    }
  }
}

type Read =
  | { kind: 'command'; command: Command }
  | { kind: 'confirm' }
  | { kind: 'cancel_draft' }
  | { kind: 'stale_button' }
  | { kind: 'other' }
  | { kind: 'text'; text: string; command: Command };

function read(input: MachineInput): Read {
  switch (input.kind) {
    case 'text':
      return { kind: 'text', text: input.text, command: parseCommand(input.text) };
    case 'button':
    case 'list': {
      const command = commandFromId(input.id);
      if (command === null) return { kind: 'stale_button' };
      if (command === 'confirm') return { kind: 'confirm' };
      if (command === 'cancel_draft') return { kind: 'cancel_draft' };
      return { kind: 'command', command };
    }
    case 'other':
      return { kind: 'other' };
  }
}

function duplicateOf(draft: CompleteDraft, context: MachineContext): number | null {
  const since = context.now.getTime() - DUPLICATE_WINDOW_MS;
  const match = context.recentInvoices
    .filter(
      (invoice) =>
        invoice.customerPhone === draft.customerPhone &&
        invoice.amount === draft.amount &&
        (invoice.status === 'pending' || invoice.status === 'sent') &&
        invoice.createdAt.getTime() >= since,
    )
    .sort((a, b) => b.number - a.number)[0];
  return match?.number ?? null;
}

function dueDate(now: Date, days?: number): Date {
  return nairobiMidnight(dueDateFor(now, days));
}

class Dialogue {
  readonly effects: Effect[] = [];
  /** How many of `effects` are notices said before the turn itself (a reset, an expired draft). */
  noticeCount = 0;
  language: Language;
  constructor(readonly context: MachineContext) {
    this.language = context.language;
  }
  get t(): Texts {
    return texts[this.language];
  }
  say(message: MessageContent): this {
    this.effects.push(reply(message));
    return this;
  }
  do(effect: Effect): this {
    this.effects.push(effect);
    return this;
  }
  touched(): string {
    return this.context.now.toISOString();
  }
  done(state: ConversationState): Transition {
    return { state, effects: this.effects };
  }

  /** Commands that mean the same in every merchant state. Returns null when `command` is not one. */
  global(command: Command, state: ConversationState): Transition | null {
    switch (command.kind) {
      case 'help':
        return this.say(this.t.help()).done(state);
      case 'language':
        if (command.language === null) return this.say(this.t.askLanguage()).done(state);
        this.do({ type: 'set_language', language: command.language });
        this.language = command.language;
        return this.say(this.t.languageSet()).done(state);
      case 'pay': {
        // `INV-0007~1a2b3c4d`: a list row naming one of two invoices with the same number (two merchants).
        const tagged = command.ref === null ? null : /^(.+)~([0-9a-f]{8})$/i.exec(command.ref);
        const ref = tagged === null ? command.ref : tagged[1]!;
        const number = ref === null ? null : this.invoiceNumberOrNull(ref);
        return this.do({ type: 'customer_pay', number, ...(tagged === null || number === null ? {} : { tag: tagged[2]!.toLowerCase() }) }).done(state);
      }
      default:
        return null;
    }
  }

  invoiceNumberOrNull(ref: string): number | null {
    const parsed = parseInvoiceNumber(ref);
    return parsed.ok ? parsed.value : null;
  }

  startDraft(): Transition {
    return this.say(this.t.askCustomer()).done({ version: STATE_VERSION, step: 'awaiting_customer', draft: {}, touchedAt: this.touched() });
  }

  toConfirmation(draft: CompleteDraft): Transition {
    const duplicate = duplicateOf(draft, this.context);
    return this.say(this.t.confirm(draft, dueDate(this.context.now, this.context.dueDays), duplicate)).done({
      version: STATE_VERSION,
      step: 'awaiting_confirmation',
      draft,
      duplicateOf: duplicate,
      touchedAt: this.touched(),
    });
  }

  /** A command given from the menu (idle) by a registered merchant. */
  idleCommand(command: Command): Transition {
    const fromGlobal = this.global(command, IDLE);
    if (fromGlobal !== null) return fromGlobal;
    switch (command.kind) {
      case 'new_invoice':
        return this.startDraft();
      case 'quick_invoice': {
        // A part that does not read keeps the parts before it: the draft waits at that step,
        // so following the hint finishes the invoice (as in the step-by-step flow).
        const phone = parsePhone(command.phone);
        if (!phone.ok) return this.say(this.t.invalidPhone()).done({ version: STATE_VERSION, step: 'awaiting_customer', draft: {}, touchedAt: this.touched() });
        const money = parseAmount(command.amount, this.context.maxAmount);
        const text = parseDescription(command.description);
        if (!money.ok) {
          return this.say(this.t.invalidAmount(money.error, this.context.maxAmount)).done({
            version: STATE_VERSION,
            step: 'awaiting_amount',
            draft: { customerPhone: phone.value, ...(text.ok ? { description: text.value } : {}) },
            touchedAt: this.touched(),
          });
        }
        if (!text.ok) {
          return this.say(this.t.invalidDescription(text.error)).done({
            version: STATE_VERSION,
            step: 'awaiting_description',
            draft: { customerPhone: phone.value, amount: money.value },
            touchedAt: this.touched(),
          });
        }
        return this.toConfirmation({ customerPhone: phone.value, amount: money.value, description: text.value });
      }
      case 'list':
        return this.do({ type: 'list_invoices' }).done(IDLE);
      case 'status':
      case 'remind':
      case 'cancel_invoice': {
        const number = this.invoiceNumberOrNull(command.ref);
        const name = command.kind === 'cancel_invoice' ? 'cancel' : command.kind;
        if (number === null) return this.say(this.t.invalidInvoiceNumber(name)).done(IDLE);
        const type = command.kind === 'status' ? 'show_invoice' : command.kind === 'remind' ? 'remind_invoice' : 'cancel_invoice';
        return this.do({ type, number }).done(IDLE);
      }
      case 'summary':
        return this.do({ type: 'show_summary' }).done(IDLE);
      case 'cancel':
      case 'no':
        return this.say(this.t.nothingToCancel()).done(IDLE);
      case 'dashboard':
        return this.do({ type: 'dashboard_link' }).done(IDLE);
      case 'yes':
      case 'unknown':
        return this.say(this.t.unknownCommand()).done(IDLE);
    }
    return this.say(this.t.unknownCommand()).done(IDLE);
  }
}

function merchantTurn(d: Dialogue, state: ConversationState, input: Read): Transition {
  if (input.kind === 'other') return d.say(d.t.onlyTextAndButtons()).done(state.step === 'awaiting_business_name' ? IDLE : state);

  // Inside a draft: cancel/stop drops it, help and language answer and keep it.
  if (isDraftStep(state)) {
    const command = input.kind === 'text' || input.kind === 'command' ? input.command : null;
    const cancels = input.kind === 'cancel_draft' || command?.kind === 'cancel' || (state.step === 'awaiting_confirmation' && command?.kind === 'no');
    if (cancels) return d.say(d.t.draftCancelled()).done(IDLE);
    if (command !== null && (command.kind === 'help' || command.kind === 'language')) {
      const kept = { ...state, touchedAt: d.touched() };
      return d.global(command, kept) ?? d.done(kept);
    }
    if (input.kind === 'command') {
      // A menu button tapped mid-draft: new_invoice restarts, the others act and keep the draft.
      if (input.command.kind === 'new_invoice') return d.startDraft();
      if (input.command.kind === 'list') return d.do({ type: 'list_invoices' }).done({ ...state, touchedAt: d.touched() });
      if (input.command.kind === 'pay') return d.global(input.command, state) ?? d.done(state);
    }
  }

  switch (state.step) {
    case 'idle':
    case 'awaiting_business_name':
      if (input.kind === 'confirm' || input.kind === 'cancel_draft' || input.kind === 'stale_button') return d.say(d.t.staleButton()).done(IDLE);
      return d.idleCommand(input.command);
    case 'awaiting_customer': {
      if (input.kind !== 'text') return d.say(d.t.staleButton()).say(d.t.askCustomer()).done({ ...state, touchedAt: d.touched() });
      const phone = parsePhone(input.text);
      if (!phone.ok) return d.say(d.t.invalidPhone()).done({ ...state, touchedAt: d.touched() });
      return d.say(d.t.askAmount(phone.value)).done({ version: STATE_VERSION, step: 'awaiting_amount', draft: { customerPhone: phone.value }, touchedAt: d.touched() });
    }
    case 'awaiting_amount': {
      if (input.kind !== 'text') return d.say(d.t.staleButton()).say(d.t.askAmount(state.draft.customerPhone)).done({ ...state, touchedAt: d.touched() });
      const money = parseAmount(input.text, d.context.maxAmount);
      if (!money.ok) return d.say(d.t.invalidAmount(money.error, d.context.maxAmount)).done({ ...state, touchedAt: d.touched() });
      if (state.draft.description !== undefined) {
        return d.toConfirmation({ customerPhone: state.draft.customerPhone, amount: money.value, description: state.draft.description });
      }
      return d.say(d.t.askDescription()).done({
        version: STATE_VERSION,
        step: 'awaiting_description',
        draft: { customerPhone: state.draft.customerPhone, amount: money.value },
        touchedAt: d.touched(),
      });
    }
    case 'awaiting_description': {
      if (input.kind !== 'text') return d.say(d.t.staleButton()).say(d.t.askDescription()).done({ ...state, touchedAt: d.touched() });
      const text = parseDescription(input.text);
      if (!text.ok) return d.say(d.t.invalidDescription(text.error)).done({ ...state, touchedAt: d.touched() });
      return d.toConfirmation({ customerPhone: state.draft.customerPhone, amount: state.draft.amount, description: text.value });
    }
    case 'awaiting_confirmation': {
      const confirms = input.kind === 'confirm' || (input.kind === 'text' && input.command.kind === 'yes');
      if (confirms) return d.do({ type: 'create_invoice', draft: state.draft }).done(IDLE);
      return d.say(d.t.confirmHint()).done({ ...state, touchedAt: d.touched() });
    }
  }
}

/** A number that is not (yet) a merchant: onboarding, or the customer side. */
function newcomerTurn(d: Dialogue, state: ConversationState, input: Read): Transition {
  const command = input.kind === 'text' || input.kind === 'command' ? input.command : null;
  // Still onboarding: the question asked again now (it expires as a draft does).
  const stillAsking = (): ConversationState => ({ version: STATE_VERSION, step: 'awaiting_business_name', askedAt: d.touched() });
  if (command?.kind === 'language') {
    const kept = state.step === 'awaiting_business_name' ? stillAsking() : state;
    const answered = d.global(command, kept) ?? d.done(kept);
    // Mid-onboarding the question still stands: ask it again, in the new language.
    if (state.step === 'awaiting_business_name' && command.language !== null) d.say(d.t.askBusinessName());
    return answered;
  }
  if (command?.kind === 'pay') return d.global(command, IDLE) ?? d.done(IDLE);

  if (state.step === 'awaiting_business_name') {
    if (input.kind !== 'text') return d.say(d.t.onlyTextAndButtons()).say(d.t.askBusinessName()).done(stillAsking());
    if (command?.kind === 'cancel') return d.say(d.t.draftCancelled()).done(IDLE);
    // "help" is a question, not a business name: the question stands.
    if (command?.kind === 'help') return d.say(d.t.askBusinessName()).done(stillAsking());
    const name = parseBusinessName(input.text);
    if (name === null) return d.say(d.t.businessNameInvalid()).done(stillAsking());
    return d.do({ type: 'register_merchant', businessName: name }).say(d.t.registered(name)).done(IDLE);
  }
  // Media, stickers, reactions...: a polite word, and nothing changes (no onboarding started).
  if (input.kind === 'other') return d.say(d.t.onlyTextAndButtons()).done(state);
  // A customer talks to the customer side unless they ask to start a business of their own.
  if (d.context.isCustomer && command?.kind !== 'new_invoice') return d.do({ type: 'customer_help' }).done(IDLE);
  return d.say(d.t.askBusinessName()).done(stillAsking());
}

export function converse(stored: unknown, input: MachineInput, context: MachineContext): Transition {
  const d = new Dialogue(context);
  let { state, reset } = restoreState(stored);
  if (reset) d.say(d.t.stateReset());
  if (isDraftStep(state) && context.now.getTime() - Date.parse(state.touchedAt) > DRAFT_TTL_MS) {
    d.say(d.t.draftExpired());
    state = IDLE;
  }
  // A business name asked for long ago is no longer what the next message answers (a customer
  // who said "thanks" once, replying "ok" to a new invoice a week later, is not naming a
  // business): the turn starts afresh, without a word (a newcomer is simply asked again).
  if (state.step === 'awaiting_business_name' && (state.askedAt === undefined || context.now.getTime() - Date.parse(state.askedAt) > DRAFT_TTL_MS)) {
    state = IDLE;
  }
  d.noticeCount = d.effects.length;
  const message = read(input);
  const turn = runTurn(d, state, message);
  return context.channel === 'sms' ? bySms(turn, state, message, d) : turn;
}

function runTurn(d: Dialogue, state: ConversationState, message: Read): Transition {
  return d.context.isMerchant ? merchantTurn(d, state, message) : newcomerTurn(d, state, message);
}

/** What changes a merchant's business (or makes one): never on the word of an SMS sender's number. */
const MERCHANT_WRITES: ReadonlySet<Effect['type']> = new Set(['register_merchant', 'create_invoice', 'remind_invoice', 'cancel_invoice', 'dashboard_link']);

/** The step and draft of a state: what a flow has reached (not when it was last touched). */
const flowOf = (state: ConversationState) => JSON.stringify({ step: state.step, draft: 'draft' in state ? state.draft : null });

/** Whether a turn from `before` writes for a merchant, or starts, moves or ends a flow. */
const changesBusiness = (turn: Transition, before: ConversationState) =>
  turn.effects.some((effect) => MERCHANT_WRITES.has(effect.type)) || flowOf(turn.state) !== flowOf(before);

/**
 * A turn that came by SMS. Meta verifies a WhatsApp number before it can write; the sender of
 * an SMS is only what the mobile network (or a grey route that forges it) says. So by SMS a
 * number may pay (the prompt goes to the phone the invoice names), read (list, status,
 * summary: the answer goes to that number), ask for help or change the language, but not
 * register a business, start, move or confirm an invoice, remind, cancel, or get a sign-in
 * link: such a turn does nothing but say so, and a draft (or a registration) begun on
 * WhatsApp stays as it was, to go on there. Inside such a flow only help and language reach
 * the flow; a PAY or a read is answered as from the menu, the flow kept.
 */
function bySms(turn: Transition, before: ConversationState, input: Read, d: Dialogue): Transition {
  // The machine's own notices of this turn (a reset, an expired draft) stand.
  const notices = turn.effects.slice(0, d.noticeCount);
  const refused = (): Transition => ({ state: before, effects: [...notices, reply(d.context.isMerchant ? d.t.merchantOnWhatsApp() : d.t.registerOnWhatsApp())] });
  const command = input.kind === 'text' || input.kind === 'command' ? input.command : null;
  if (before.step === 'idle' || command?.kind === 'help' || command?.kind === 'language') return changesBusiness(turn, before) ? refused() : turn;
  // Inside a flow: a PAY or a read is answered as from the menu (even where the flow would take
  // its words as its next answer: a description takes any text); another answer for the flow
  // is refused; anything else the flow would only hint at is answered as from the menu.
  const fromMenuFirst = command?.kind === 'pay' || command?.kind === 'list' || command?.kind === 'status' || command?.kind === 'summary';
  if (!fromMenuFirst && changesBusiness(turn, before)) return refused();
  const fromMenu = runTurn(new Dialogue(d.context), IDLE, input);
  if (changesBusiness(fromMenu, IDLE)) return refused();
  return { state: before, effects: [...notices, ...fromMenu.effects] };
}
