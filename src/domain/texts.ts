/**
 * Every message the bot says, in English and Kiswahili (interface: `texts.types.ts`).
 *
 * Pure: no I/O, no clock reads. Dates that come in are shown as Nairobi calendar days
 * ('29 Nov 2026' / '29 Novemba 2026'); money as 'KES 1,500'; phones as '0712 345 678';
 * invoice numbers as 'INV-0007'. Every message fits WhatsApp's limits whatever the
 * merchant typed: names and descriptions are cut (never mid-emoji) where they would not fit,
 * and a final guard cuts any body that is still too long.
 *
 * Customer-facing messages use plain ASCII around the merchant's own words, so when they
 * fall back to SMS they stay in the cheap GSM alphabet (160 characters a part, not 70).
 */
import type { MessageContent } from './outbound.js';
import type { CustomerInvoice, InvoiceDetail, InvoiceLine, MerchantSummary, PaymentFailureReason, Texts, TextsByLanguage } from './texts.types.js';

// ---------------------------------------------------------------------------
// Formatting (private copies; same outputs as parse.ts)
// ---------------------------------------------------------------------------

/** 1500 -> 'KES 1,500'. */
function formatAmount(amount: number): string {
  const [int = '0', frac] = String(amount).split('.');
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `KES ${frac === undefined ? grouped : `${grouped}.${frac}`}`;
}

/** '254712345678' -> '0712 345 678'; anything else as is. */
function formatPhone(msisdn: string): string {
  const m = /^254(\d{3})(\d{3})(\d{3})$/.exec(msisdn);
  return m === null ? msisdn : `0${m[1]} ${m[2]} ${m[3]}`;
}

/** 7 -> 'INV-0007'. */
function formatInvoiceNumber(n: number): string {
  return `INV-${String(n).padStart(4, '0')}`;
}

/**
 * The payer's number with its middle hidden: '254712345678' -> '0712 *** 678' (also from
 * '0712345678', '+254 712 345 678' or an already masked '2547123***678'). Anything else shows at
 * most its last 3 digits, so a full number never reaches the merchant.
 */
function maskPhone(raw: string): string {
  const m = /^(?:\+?254|0)?([17]\d\d)[\d*]{3}(\d{3})$/.exec(raw.replace(/[\s-]/g, ''));
  if (m !== null) return `0${m[1]} *** ${m[2]}`;
  const digits = raw.replace(/\D/g, '');
  return digits.length >= 3 ? `*** ${digits.slice(-3)}` : '***';
}

const money = (amount: number) => `*${formatAmount(amount)}*`;
const inv = (n: number) => `*${formatInvoiceNumber(n)}*`;
const phone = formatPhone;

// ---------------------------------------------------------------------------
// Limits and safe cutting
// ---------------------------------------------------------------------------

const TEXT_MAX = 4096;
const BODY_MAX = 1024;
const ROW_TITLE_MAX = 24;
const ROW_DESCRIPTION_MAX = 72;
const LIST_ROWS_MAX = 10;
const SMS_TARGET = 160;
/**
 * Business names are 1-60 code points and descriptions 1-100 (up to 2 UTF-16 units each), so a
 * valid one is never cut; these caps only guard against whatever else reaches us.
 */
const NAME_SHOWN_MAX = 120;
const DESCRIPTION_SHOWN_MAX = 300;
const ATTEMPTS_SHOWN_MAX = 5;
const RESULT_DESC_SHOWN_MAX = 80;
const RECEIPT_SHOWN_MAX = 20;
const ELLIPSIS = '...';

const graphemes = new Intl.Segmenter('en', { granularity: 'grapheme' });

/** At most `max` UTF-16 units, cut between user-perceived characters (never half an emoji), '...' when cut. */
/**
 * The merchant's name as a template parameter: at most 60 characters, cut between graphemes
 * (never half an emoji: a lone surrogate is not valid text), or the service's name when empty.
 */
export function templateName(name: string): string {
  const trimmed = name.trim();
  // Whole when it fits (every receipt names its merchant): no grapheme is cut, nothing to segment.
  if (trimmed.length <= 60) return trimmed === '' ? 'InvoiceIQ' : trimmed;
  let out = '';
  for (const { segment } of graphemes.segment(trimmed)) {
    if (out.length + segment.length > 60) break;
    out += segment;
  }
  return out === '' ? 'InvoiceIQ' : out;
}

function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  if (max <= ELLIPSIS.length) return ELLIPSIS.slice(0, Math.max(0, max));
  let out = '';
  for (const { segment } of graphemes.segment(text)) {
    if (out.length + segment.length + ELLIPSIS.length > max) break;
    out += segment;
  }
  return `${out.trimEnd()}${ELLIPSIS}`;
}

/** User text on one line: whitespace runs (newlines too) become one space. */
const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim();
/** Ends a sentence with a full stop unless it already ends with one (or with '...', '!', '?'). */
const sentence = (text: string) => (/[.!?]$/.test(text) ? text : `${text}.`);
const businessName = (name: string) => clip(oneLine(name), NAME_SHOWN_MAX);
/** An M-PESA receipt number on one line (they are 10 characters); null when there is none. */
const receiptShown = (receipt: string | null) => {
  const shown = receipt === null ? '' : clip(oneLine(receipt), RECEIPT_SHOWN_MAX);
  return shown === '' ? null : shown;
};
const descriptionShown = (description: string, max = DESCRIPTION_SHOWN_MAX) => clip(oneLine(description), max);

// ---------------------------------------------------------------------------
// Dates (Africa/Nairobi)
// ---------------------------------------------------------------------------

const nairobi = new Intl.DateTimeFormat('en-GB', {
  timeZone: 'Africa/Nairobi',
  year: 'numeric',
  month: 'numeric',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  hourCycle: 'h23',
});

type DateParts = { day: number; month: number; year: number; time: string };

function nairobiParts(date: Date): DateParts | null {
  if (Number.isNaN(date.getTime())) return null;
  const part = (type: Intl.DateTimeFormatPartTypes) => nairobi.formatToParts(date).find((p) => p.type === type)?.value ?? '';
  return { day: Number(part('day')), month: Number(part('month')), year: Number(part('year')), time: `${part('hour')}:${part('minute')}` };
}

const MONTHS = {
  en: ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'],
  sw: ['Januari', 'Februari', 'Machi', 'Aprili', 'Mei', 'Juni', 'Julai', 'Agosti', 'Septemba', 'Oktoba', 'Novemba', 'Desemba'],
  swShort: ['Jan', 'Feb', 'Mac', 'Apr', 'Mei', 'Jun', 'Jul', 'Ago', 'Sep', 'Okt', 'Nov', 'Des'],
} as const;
type MonthNames = (typeof MONTHS)[keyof typeof MONTHS];

function day(date: Date, months: MonthNames): string {
  const p = nairobiParts(date);
  return p === null ? '-' : `${p.day} ${months[p.month - 1] ?? ''} ${p.year}`;
}

function dayAndTime(date: Date, months: MonthNames): string {
  const p = nairobiParts(date);
  return p === null ? '-' : `${p.day} ${months[p.month - 1] ?? ''} ${p.time}`;
}

/** '29 Nov 2026' */
const dayEn = (date: Date) => day(date, MONTHS.en);
/** '29 Novemba 2026' */
const daySw = (date: Date) => day(date, MONTHS.sw);

// ---------------------------------------------------------------------------
// Content builders
// ---------------------------------------------------------------------------

type Button = readonly [id: string, title: string];

function text(body: string): MessageContent {
  return { type: 'text', body: clip(body.trim(), TEXT_MAX) };
}

function buttons(body: string, choices: readonly Button[]): MessageContent {
  return { type: 'buttons', body: clip(body.trim(), BODY_MAX), buttons: choices.map(([id, title]) => ({ id, title })) };
}

/**
 * The id of a Pay button (or the payload of a template's quick reply): `pay:INV-0007`, and with
 * the invoice's id `pay:INV-0007~<first 8 hex digits of it>`. Every merchant numbers from
 * INV-0001, so a customer may owe one merchant's INV-0007 and have paid (or seen cancelled)
 * another's: a tap on the old message must name its own invoice, never the other one (the
 * conversation pays only the invoice a tag names). 21 characters for INV-0007, 25 for the
 * largest number: far inside WhatsApp's 256 for a button id or quick-reply payload and 200 for a
 * list row id. Without an id (an invoice not
 * known here), the number alone, which the conversation reads only when it is unambiguous.
 */
export function payButtonId(number: number, invoiceId?: string): string {
  return `pay:${formatInvoiceNumber(number)}${invoiceId === undefined ? '' : `~${invoiceId.slice(0, 8).toLowerCase()}`}`;
}
const payId = payButtonId;

/**
 * Several unpaid invoices for one customer: a list whose rows are `pay:INV-0007~<first 8 hex
 * digits of the invoice's id>`, each naming its own invoice. Every merchant numbers from
 * INV-0001, and an untagged number is paid only while it names one unpaid invoice of the
 * customer's and no settled one: an untagged row for an INV-0001 whose number a paid invoice
 * of another merchant shares sent the customer back to this same list, for good (found by a
 * review). An SMS reader is asked to type the row's `PAY INV-0007~...` (smsReply).
 */
function payList(body: string, button: string, invoices: readonly CustomerInvoice[]): MessageContent {
  const seen = new Set<string>();
  const rows: Array<{ id: string; title: string; description: string }> = [];
  for (const invoice of invoices) {
    const id = payId(invoice.number, invoice.id);
    if (seen.has(id) || rows.length >= LIST_ROWS_MAX) continue;
    seen.add(id);
    rows.push({
      id,
      title: clip(`${formatInvoiceNumber(invoice.number)} - ${formatAmount(invoice.amount)}`, ROW_TITLE_MAX),
      description: clip(`${oneLine(invoice.merchantName)}: ${oneLine(invoice.description)}`, ROW_DESCRIPTION_MAX),
    });
  }
  return { type: 'list', body: clip(body.trim(), BODY_MAX), button, sections: [{ rows }] };
}

/**
 * An SMS of at most 160 characters where possible: the description is cut first (and dropped
 * when too little of it would be left), then the business name. `build` gets '' for no description.
 */
function fitSms(build: (name: string, description: string) => string, merchantName: string, description: string): string {
  const name = oneLine(merchantName);
  const desc = oneLine(description);
  const full = build(name, desc);
  if (full.length <= SMS_TARGET) return full;
  const MIN_DESCRIPTION = 12;
  for (let room = desc.length - 1; room >= MIN_DESCRIPTION; room--) {
    const candidate = build(name, clip(desc, room));
    if (candidate.length <= SMS_TARGET) return candidate;
  }
  const MIN_NAME = 12;
  for (let room = name.length; room >= MIN_NAME; room--) {
    const candidate = build(clip(name, room), '');
    if (candidate.length <= SMS_TARGET) return candidate;
  }
  return build(clip(name, MIN_NAME), '');
}

/** An SMS whose only words of the merchant's are the business name (cut when it would not fit). */
const fitSmsName = (build: (name: string) => string, merchantName: string) => fitSms((name) => build(name), merchantName, '');

/** The failure reason in words; an unexpected value reads as 'other'. */
function failureWords(words: Record<PaymentFailureReason, string>, reason: PaymentFailureReason): string {
  return Object.hasOwn(words, reason) ? words[reason] : words.other;
}

/** The latest attempts, oldest first, and how many earlier ones were left out. */
function latestAttempts(attempts: InvoiceDetail['attempts']): { shown: InvoiceDetail['attempts']; hidden: number } {
  const sorted = [...attempts].sort((a, b) => a.at.getTime() - b.at.getTime());
  const shown = sorted.slice(-ATTEMPTS_SHOWN_MAX);
  return { shown, hidden: sorted.length - shown.length };
}

type InvoiceStatusWords = Record<'pending' | 'sent' | 'paid' | 'failed' | 'cancelled' | 'overdue', string>;

function statusWord(words: InvoiceStatusWords, line: Pick<InvoiceLine, 'status' | 'overdue'>): string {
  if (line.overdue && line.status !== 'paid' && line.status !== 'cancelled') return words.overdue;
  return Object.hasOwn(words, line.status) ? words[line.status as keyof InvoiceStatusWords] : clip(oneLine(line.status), 20);
}

function attemptWord(words: Record<'pending' | 'succeeded' | 'failed' | 'expired', string>, status: string): string {
  return Object.hasOwn(words, status) ? words[status as keyof typeof words] : clip(oneLine(status), 20);
}

/** The invoice list body: header, at most 10 lines, footer; never over the body limit. */
function listBody(header: string, lines: readonly InvoiceLine[], line: (l: InvoiceLine) => string, footer: string): string {
  const shown = lines.slice(0, LIST_ROWS_MAX).map(line);
  return `${header}\n\n${shown.join('\n')}\n\n${footer}`;
}

// ---------------------------------------------------------------------------
// English
// ---------------------------------------------------------------------------

const EN_MENU: readonly Button[] = [
  ['new_invoice', 'New invoice'],
  ['list', 'My invoices'],
  ['help', 'Help'],
];
const EN_CONFIRM: readonly Button[] = [
  ['confirm_send', 'Send'],
  ['cancel_draft', 'Cancel'],
];
const LANGUAGE_BUTTONS: readonly Button[] = [
  ['lang:en', 'English'],
  ['lang:sw', 'Kiswahili'],
];
const enPay = (n: number, invoiceId?: string): Button => [payId(n, invoiceId), 'Pay now'];

const EN_STATUS: InvoiceStatusWords = {
  pending: 'Pending',
  sent: 'Unpaid',
  paid: 'Paid',
  // An invoice is `failed` when it reached the customer on no channel (src/delivery/invoice-reach.ts).
  failed: 'Not delivered',
  cancelled: 'Cancelled',
  overdue: 'Overdue',
};
const EN_ATTEMPT = { pending: 'waiting for PIN', succeeded: 'paid', failed: 'failed', expired: 'timed out' };
const EN_COMMAND = { status: 'status', remind: 'remind', cancel: 'cancel' } as const;
const EN_FAILURE: Record<PaymentFailureReason, string> = {
  cancelled: 'the customer cancelled the M-PESA prompt.',
  unreachable: "the customer's phone was off or out of reach, so the M-PESA prompt didn't get through.",
  wrong_pin: 'the customer entered the wrong M-PESA PIN.',
  insufficient_funds: "the customer didn't have enough money in their M-PESA.",
  limit: "the amount is over the customer's M-PESA limits.",
  expired: 'the M-PESA prompt expired before the customer answered it.',
  no_answer: 'M-PESA never told me how the payment ended, so I cannot confirm it.',
  other: 'M-PESA did not complete the payment.',
};

function enFailureAdvice(number: number, reason: PaymentFailureReason): string {
  switch (reason) {
    case 'limit':
      return 'Ask the customer to check their M-PESA limits, or split the amount into smaller invoices.';
    case 'no_answer':
      return `If the customer says they paid, check your M-PESA messages before asking them to pay again. Type status ${number} to see the attempts.`;
    default:
      return `The customer can reply PAY to get a new M-PESA prompt, or you can type remind ${number} to send one.`;
  }
}

function enCustomerInvoice(invoice: CustomerInvoice, closing: string): string {
  return [
    `Invoice ${inv(invoice.number)} from ${businessName(invoice.merchantName)}`,
    `Amount: ${money(invoice.amount)}`,
    `For: ${descriptionShown(invoice.description)}`,
    ...(invoice.dueDate === null ? [] : [`Due: ${dayEn(invoice.dueDate)}`]),
    '',
    closing,
  ].join('\n');
}

const en: Texts = {
  askBusinessName: () =>
    text(
      "Hi! I'm InvoiceIQ. I send your customers M-PESA invoices on WhatsApp and tell you when they pay.\n\n" +
        'First, what is your business called? (e.g. Mama Njeri Groceries)\n\n' +
        'Kwa Kiswahili, andika: lugha sw',
    ),
  businessNameInvalid: () => text('Please send your business name: 1 to 60 characters.'),
  registered: (name) =>
    buttons(
      `Welcome, ${businessName(name)}! You're all set.\n\n` +
        'To bill a customer, tap New invoice, or send it all in one message:\ninvoice 0712345678 1500 Cake',
      EN_MENU,
    ),

  menu: () => buttons('What would you like to do?', EN_MENU),
  help: () =>
    buttons(
      [
        "Here's what I can do:",
        '',
        'new / ankara - make an invoice step by step',
        'invoice 0712345678 1500 Cake - make one in a single message',
        'list / orodha - your latest 10 invoices',
        'status 7 / hali 7 - details of INV-0007',
        'remind 7 / kumbusha 7 - send INV-0007 again, with a new M-PESA prompt',
        'cancel 7 / ghairi 7 - cancel an unpaid invoice',
        'summary / muhtasari - your totals',
        'language en | sw (lugha sw | en) - change my language',
        'cancel / stop - drop the invoice you are making',
        'help / msaada - this message',
      ].join('\n'),
      EN_MENU,
    ),
  unknownCommand: () => buttons("Sorry, I didn't get that. Tap a button below, or type help to see everything I can do.", EN_MENU),
  onlyTextAndButtons: () => text('Sorry, I can only read text messages and button taps. Please type your message.'),
  staleButton: () => text("That button is from an older message and doesn't work any more. Type menu to see what you can do."),
  stateReset: () => buttons("Sorry, I lost track of what we were doing, so let's start again from the menu.", EN_MENU),

  askCustomer: () => text("New invoice. What is the customer's M-PESA number?\nFor example: 0712 345 678\n\n(Type cancel to stop.)"),
  invalidPhone: () => text("That doesn't look like a Kenyan mobile number. Try 0712 345 678."),
  askAmount: (customerPhone) => text(`How much should ${phone(customerPhone)} pay? Send the amount in shillings, e.g. 1500.`),
  invalidAmount: (reason, max) => {
    switch (reason) {
      case 'invalid_amount':
        return text("I couldn't read that amount. Send whole shillings, e.g. 1500 or 1,500.");
      case 'decimal_amount':
        return text('M-PESA only takes whole shillings, no cents. Send e.g. 1500 instead of 1500.50.');
      case 'amount_too_small':
        return text(`The amount must be at least ${money(1)}.`);
      case 'amount_too_large':
        return text(`One invoice can be at most ${money(max)}. Please send a smaller amount.`);
    }
  },
  askDescription: () => text('What is it for? Send a short description, e.g. 2 bags of cement (up to 100 characters).'),
  invalidDescription: (reason) =>
    text(
      reason === 'description_empty'
        ? "The description can't be empty. Send a few words about what it's for (up to 100 characters)."
        : "That's too long: a description can be at most 100 characters. Please send a shorter one.",
    ),
  confirm: (draft, dueDate, duplicateOf) =>
    buttons(
      [
        'Please check this invoice:',
        `Customer: ${phone(draft.customerPhone)}`,
        `Amount: ${money(draft.amount)}`,
        `For: ${descriptionShown(draft.description)}`,
        `Due: ${dayEn(dueDate)}`,
        ...(duplicateOf === null
          ? []
          : ['', `⚠️ You sent ${inv(duplicateOf)} to this customer for the same amount a few minutes ago. Tap Send only if you want a second one.`]),
        '',
        'Send it to the customer?',
      ].join('\n'),
      EN_CONFIRM,
    ),
  confirmHint: () => buttons('Tap Send to send this invoice or Cancel to drop it (or type yes / no).', EN_CONFIRM),
  draftCancelled: () => buttons('OK, cancelled. Nothing was sent.', EN_MENU),
  draftExpired: () => text('Your unfinished invoice expired after 30 minutes without a reply, so I dropped it. Nothing was sent.'),
  nothingToCancel: () => text("There's nothing to cancel right now. To cancel a sent invoice, type e.g. cancel 7."),
  merchantOnWhatsApp: () =>
    text('For your safety, invoices are created, reminded and cancelled only on WhatsApp: please message us there. By SMS you can use list, status 7 and summary.'),
  registerOnWhatsApp: () => text('To register your business, please message us on WhatsApp. By SMS you can pay an invoice: reply PAY.'),

  invalidInvoiceNumber: (command) =>
    text(`Which invoice? Type its number, e.g. ${EN_COMMAND[command]} 7 or ${EN_COMMAND[command]} INV-0007.`),
  askLanguage: () => buttons('Which language should I use?\nNitumie lugha gani?', LANGUAGE_BUTTONS),
  languageSet: () => text("Done! I'll reply in English from now on."),

  invoiceCreated: (number, customerPhone, amount) =>
    buttons(
      `✅ ${inv(number)} for ${money(amount)} is created and on its way to ${phone(customerPhone)}. ` +
        "They'll get an M-PESA prompt, and I'll tell you when it's paid.",
      EN_MENU,
    ),
  invoiceList: (lines) => {
    if (lines.length === 0) return buttons('You have no invoices yet. Tap New invoice to make your first one.', [EN_MENU[0]!]);
    const example = lines[0]!.number;
    return buttons(
      listBody(
        'Your latest invoices:',
        lines,
        (l) => `${inv(l.number)} · ${phone(l.customerPhone)} · ${money(l.amount)} · ${statusWord(EN_STATUS, l)}`,
        `For details, type status and the number, e.g. status ${example}.`,
      ),
      [EN_MENU[0]!],
    );
  },
  invoiceDetail: (detail) => {
    const { shown, hidden } = latestAttempts(detail.attempts);
    const attempts =
      shown.length === 0
        ? ['No payment attempts yet.']
        : [
            'Payment attempts:',
            ...(hidden > 0 ? [`(${hidden} earlier not shown)`] : []),
            ...shown.map(
              (a) =>
                `• ${dayAndTime(a.at, MONTHS.en)} - ${attemptWord(EN_ATTEMPT, a.status)}` +
                (a.resultDesc === null || oneLine(a.resultDesc) === '' ? '' : `: ${clip(oneLine(a.resultDesc), RESULT_DESC_SHOWN_MAX)}`),
            ),
          ];
    const paid =
      detail.paidAt === null && detail.mpesaReceipt === null
        ? []
        : [
            `Paid: ${detail.paidAt === null ? '-' : dayEn(detail.paidAt)}` +
              (detail.mpesaReceipt === null ? '' : `, M-PESA receipt ${clip(oneLine(detail.mpesaReceipt), 20)}`),
          ];
    return text(
      [
        `${inv(detail.number)} · ${statusWord(EN_STATUS, detail)}`,
        `Customer: ${phone(detail.customerPhone)}`,
        `Amount: ${money(detail.amount)}`,
        `For: ${descriptionShown(detail.description)}`,
        `Created: ${dayEn(detail.createdAt)}`,
        ...(detail.dueDate === null ? [] : [`Due: ${dayEn(detail.dueDate)}${detail.overdue && detail.status !== 'paid' && detail.status !== 'cancelled' ? ' (overdue)' : ''}`]),
        ...paid,
        '',
        ...attempts,
      ].join('\n'),
    );
  },
  invoiceNotFound: (number) => text(`I can't find ${inv(number)} in your invoices. Type list to see your latest ones.`),
  reminderSent: (number, customerPhone, prompt = 'new') =>
    prompt === 'new'
      ? text(`Reminder for ${inv(number)} sent to ${phone(customerPhone)}, with a new M-PESA prompt.`)
      : text(
          `Reminder for ${inv(number)} sent to ${phone(customerPhone)}. An M-PESA prompt sent less than 2 minutes ago may still be on their phone, ` +
            "so I didn't send a new one: they can enter their PIN on it, or tap Pay now on the reminder after 2 minutes to get a new one.",
        ),
  invoiceUnreachedSms: (number, customerPhone) =>
    `InvoiceIQ: invoice ${formatInvoiceNumber(number)} could not reach ${phone(customerPhone)} by WhatsApp or SMS. Check the number; reply status ${number} to see it.`,
  invoiceUnreached: (number, customerPhone) =>
    text(
      `⚠️ Invoice ${inv(number)} could not reach ${phone(customerPhone)} on WhatsApp or SMS. ` +
        `Check the number; type status ${number} to see it, or create a new invoice with the right number.`,
    ),
  cannotRemind: (number, status) =>
    text(
      status === 'paid'
        ? `${inv(number)} is already paid, so there's nothing to remind.`
        : `${inv(number)} was cancelled, so I can't send a reminder for it.`,
    ),
  invoiceCancelled: (number) => text(`${inv(number)} is cancelled. I've told the customer they don't need to pay it.`),
  cannotCancel: (number, status) =>
    text(
      status === 'paid'
        ? `${inv(number)} is already paid, so it can't be cancelled. To refund, send the money back through M-PESA.`
        : `${inv(number)} is already cancelled.`,
    ),
  summary: (s: MerchantSummary) =>
    text(
      [
        'Your summary:',
        `Invoices sent: ${s.sent}`,
        `Paid: ${s.paid}`,
        `Still to collect: ${money(s.outstandingAmount)}`,
        `Overdue: ${s.overdue} ${s.overdue === 1 ? 'invoice' : 'invoices'}`,
        `Collected this month: ${money(s.collectedThisMonth)}`,
      ].join('\n'),
    ),

  invoiceToCustomer: (merchantName, number, amount, description, dueDate, customerPhone, invoiceId) =>
    buttons(
      [
        `Hello! You have an invoice from ${businessName(merchantName)}.`,
        '',
        `Invoice: ${inv(number)}`,
        `Amount: ${money(amount)}`,
        `For: ${descriptionShown(description)}`,
        `Due: ${dayEn(dueDate)}`,
        '',
        `You will get an M-PESA prompt on ${phone(customerPhone)}. Enter your PIN to pay.`,
        'No prompt? Tap Pay now.',
      ].join('\n'),
      [enPay(number, invoiceId)],
    ),
  invoiceToCustomerSms: (merchantName, number, amount, description, dueDate) =>
    fitSms(
      (name, desc) =>
        `${sentence(`Invoice ${formatInvoiceNumber(number)} from ${name}: ${formatAmount(amount)}${desc === '' ? '' : ` for ${desc}`}`)} ` +
        `Due ${dayEn(dueDate)}. Reply PAY to pay with M-PESA.`,
      merchantName,
      description,
    ),
  invoiceCancelledToCustomer: (merchantName, number) =>
    text(`Invoice ${inv(number)} from ${businessName(merchantName)} has been cancelled. You don't need to pay it.`),
  reminderToCustomer: (merchantName, number, amount, dueDate, invoiceId) =>
    buttons(
      `Reminder: invoice ${inv(number)} from ${businessName(merchantName)} for ${money(amount)} is due on ${dayEn(dueDate)}.\n\n` +
        'Tap Pay now to get an M-PESA prompt, then enter your PIN.',
      [enPay(number, invoiceId)],
    ),
  customerInvoices: (invoices) => {
    const [only] = invoices;
    if (only === undefined) return text('You have no invoices to pay right now.');
    if (invoices.length === 1) return buttons(enCustomerInvoice(only, 'Tap Pay now to get an M-PESA prompt, then enter your PIN.'), [enPay(only.number, only.id)]);
    const more = invoices.length > LIST_ROWS_MAX ? ` Here are the first ${LIST_ROWS_MAX}.` : '';
    return payList(`You have ${invoices.length} unpaid invoices.${more} Tap Choose invoice and pick the one to pay.`, 'Choose invoice', invoices);
  },
  customerPayPending: (invoice) => text(enCustomerInvoice(invoice, 'An M-PESA prompt is on its way to your phone. Enter your PIN to pay.')),

  promptSent: (invoice, customerPhone) =>
    text(
      `Check your phone ${phone(customerPhone)} and enter your M-PESA PIN to pay ${inv(invoice.number)} (${money(invoice.amount)}) ` +
        `to ${businessName(invoice.merchantName)}.\n` +
        `For: ${descriptionShown(invoice.description)}\n\n` +
        'No prompt after 2 minutes? Reply PAY to try again.',
    ),
  promptStillPending: (number) =>
    text(
      `An M-PESA prompt for ${inv(number)} was sent less than 2 minutes ago. Check your phone and enter your PIN, ` +
        "or if it didn't arrive, reply PAY again in a couple of minutes.",
    ),
  promptNotStarted: (number, outcome = 'refused', invoiceId) =>
    outcome === 'refused'
      ? buttons(
          `Sorry, M-PESA couldn't send the payment prompt for ${inv(number)} just now. ` +
            'Please wait a minute, then tap Pay now (or reply PAY) to try again.',
          [enPay(number, invoiceId)],
        )
      : // No answer came: the prompt may well be on the phone, so it is not called a failure.
        buttons(
          `M-PESA didn't confirm the payment prompt for ${inv(number)}. If a prompt came to your phone, enter your PIN to pay. ` +
            'If none came, wait 2 minutes, then tap Pay now (or reply PAY) to try again.',
          [enPay(number, invoiceId)],
        ),
  alreadyPaid: (number) => text(`${inv(number)} is already paid, so there's nothing more to pay. Thank you!`),
  dashboardLink: (url) => text(`Your dashboard: ${url}\n\nThe link works once and expires in 15 minutes. Don't share it: it opens your figures.`),
  dashboardUnavailable: () => text(`The dashboard isn't set up on this service yet. Type *summary* for your figures here.`),
  receiptToCustomer: (merchantName, number, amount, receipt) => {
    const shown = receiptShown(receipt);
    return text(
      `Thank you! You paid ${money(amount)} to ${businessName(merchantName)} for invoice ${inv(number)}.\n` +
        (shown === null ? 'The payment is confirmed by M-PESA.' : `M-PESA receipt: ${shown}`),
    );
  },
  receiptToCustomerSms: (merchantName, number, amount, receipt) => {
    const shown = receiptShown(receipt);
    return fitSmsName(
      (name) =>
        `Paid: ${formatAmount(amount)} to ${name} for ${formatInvoiceNumber(number)}. ` +
        (shown === null ? 'Confirmed by M-PESA.' : `M-PESA receipt ${shown}.`) +
        ' Thank you!',
      merchantName,
    );
  },
  paidToMerchant: (number, amount, payerPhone, receipt, options) => {
    const shown = receiptShown(receipt);
    return text(
      [
        `✅ ${inv(number)} is paid: ${money(amount)}.`,
        // On its own line: the mask's asterisks must not pair with the bold markers above.
        `Paid by: ${maskPhone(payerPhone)}`,
        shown === null ? 'M-PESA confirmed the payment but sent no receipt number.' : `M-PESA receipt: ${shown}`,
        ...(options?.wasCancelled === true
          ? ['', 'You had cancelled this invoice, but the customer paid the M-PESA prompt they already had, so it is now marked paid. If you sent them another invoice for the same thing, refund one of the two payments.']
          : []),
      ].join('\n'),
    );
  },
  paymentFailedToCustomer: (merchantName, number, amount, options, invoiceId) =>
    options?.fromQuery === true
      ? buttons(
          `M-PESA did not confirm your payment of ${money(amount)} for invoice ${inv(number)} from ${businessName(merchantName)}.\n\n` +
            `If M-PESA already sent you a confirmation SMS for it, do not pay again: show that SMS to ${businessName(merchantName)}. ` +
            'Otherwise tap Pay now (or reply PAY) to get a new M-PESA prompt and try again.',
          [enPay(number, invoiceId)],
        )
      : buttons(
          `Your payment of ${money(amount)} for invoice ${inv(number)} from ${businessName(merchantName)} was not completed.\n\n` +
            'Tap Pay now (or reply PAY) to get a new M-PESA prompt and try again.',
          [enPay(number, invoiceId)],
        ),
  paymentFailedToCustomerSms: (merchantName, number, amount, options) =>
    options?.fromQuery === true
      ? fitSmsName(
          (name) =>
            `M-PESA did not confirm payment of ${formatAmount(amount)} for ${formatInvoiceNumber(number)} from ${name}. ` +
            'Reply PAY to try again, unless M-PESA already confirmed it to you.',
          merchantName,
        )
      : fitSmsName(
          (name) =>
            `Payment of ${formatAmount(amount)} for ${formatInvoiceNumber(number)} from ${name} was not completed. ` +
            'Reply PAY to try again with a new M-PESA prompt.',
          merchantName,
        ),
  paymentFailedToMerchant: (number, reason, options) =>
    text(
      `${inv(number)} is not paid yet: ${failureWords(EN_FAILURE, reason)}\n\n${enFailureAdvice(number, reason)}` +
        (options?.fromQuery === true
          ? "\n\nM-PESA's status check reported this, not the payment itself, and that check is sometimes wrong: if the customer shows you an M-PESA confirmation, check your M-PESA statement before asking them to pay again."
          : ''),
    ),
  paidTwiceToMerchant: (number, amount, receipt) => {
    const shown = receiptShown(receipt);
    return text(
      `⚠️ ${inv(number)} was paid twice: M-PESA confirmed a second payment of ${money(amount)}${shown === null ? '' : ` (receipt ${shown})`}.\n\n` +
        `The invoice stays marked paid. Refund the customer one of the two payments. Type status ${number} to see the attempts.`,
    );
  },
  paymentNeedsReview: (number, expected, received, options = { alreadyPaid: false }) =>
    text(
      (received === null
        ? `⚠️ A payment came in for ${inv(number)}, but M-PESA did not say how much was paid; the invoice is for ${money(expected)}.\n\n`
        : `⚠️ A payment of ${money(received)} came in for ${inv(number)}, but the invoice is for ${money(expected)}.\n\n`) +
        (options.alreadyPaid
          ? 'The invoice stays marked paid, as M-PESA confirmed it earlier; this payment is recorded for review. '
          : "I haven't marked it paid; the payment is recorded for review. ") +
        (received === null
          ? 'Check your M-PESA messages for the amount, and settle any difference with the customer. '
          : 'Check your M-PESA messages and settle the difference with the customer. ') +
        `Type status ${number} to see the attempts.`,
    ),
  reminderDue: (merchantName, number, amount, dueDate, when, invoiceId) =>
    buttons(
      `Reminder: invoice ${inv(number)} from ${businessName(merchantName)} for ${money(amount)} is due ` +
        `${when === 'today' ? 'today' : 'tomorrow'}, ${dayEn(dueDate)}.\n\n` +
        'Tap Pay now to get an M-PESA prompt, then enter your PIN.',
      [enPay(number, invoiceId)],
    ),
  reminderDueSms: (merchantName, number, amount, dueDate, when) =>
    fitSmsName(
      (name) =>
        `Reminder: ${formatInvoiceNumber(number)} from ${name} for ${formatAmount(amount)} is due ` +
        `${when === 'today' ? 'today' : 'tomorrow'}, ${dayEn(dueDate)}. Reply PAY to pay with M-PESA.`,
      merchantName,
    ),
};

// ---------------------------------------------------------------------------
// Kiswahili
// ---------------------------------------------------------------------------

const SW_MENU: readonly Button[] = [
  ['new_invoice', 'Ankara mpya'],
  ['list', 'Ankara zangu'],
  ['help', 'Msaada'],
];
const SW_CONFIRM: readonly Button[] = [
  ['confirm_send', 'Tuma'],
  ['cancel_draft', 'Ghairi'],
];
const swPay = (n: number, invoiceId?: string): Button => [payId(n, invoiceId), 'Lipa sasa'];

const SW_STATUS: InvoiceStatusWords = {
  pending: 'Inasubiri',
  sent: 'Haijalipwa',
  paid: 'Imelipwa',
  failed: 'Haikumfikia mteja',
  cancelled: 'Imeghairiwa',
  overdue: 'Imechelewa',
};
const SW_ATTEMPT = { pending: 'inasubiri PIN', succeeded: 'imelipwa', failed: 'imeshindwa', expired: 'muda umeisha' };
const SW_COMMAND = { status: 'hali', remind: 'kumbusha', cancel: 'ghairi' } as const;
const SW_FAILURE: Record<PaymentFailureReason, string> = {
  cancelled: 'mteja alighairi ombi la M-PESA.',
  unreachable: 'simu ya mteja ilikuwa imezimwa au haipatikani, kwa hivyo ombi la M-PESA halikumfikia.',
  wrong_pin: 'mteja aliweka PIN ya M-PESA isiyo sahihi.',
  insufficient_funds: 'mteja hakuwa na pesa za kutosha kwenye M-PESA.',
  limit: 'kiasi kinazidi vikomo vya M-PESA vya mteja.',
  expired: 'muda wa ombi la M-PESA uliisha kabla mteja hajalijibu.',
  no_answer: 'M-PESA haikunijulisha jinsi malipo yalivyoishia, kwa hivyo siwezi kuyathibitisha.',
  other: 'M-PESA haikukamilisha malipo.',
};

function swFailureAdvice(number: number, reason: PaymentFailureReason): string {
  switch (reason) {
    case 'limit':
      return 'Mwombe mteja aangalie vikomo vyake vya M-PESA, au ugawe kiasi hiki kwenye ankara ndogo zaidi.';
    case 'no_answer':
      return `Kama mteja anasema amelipa, angalia jumbe zako za M-PESA kabla ya kumwomba alipe tena. Andika hali ${number} uone majaribio.`;
    default:
      return `Mteja anaweza kujibu LIPA apokee ombi jipya la M-PESA, au unaweza kuandika kumbusha ${number} kumtumia ombi jipya.`;
  }
}

function swCustomerInvoice(invoice: CustomerInvoice, closing: string): string {
  return [
    `Ankara ${inv(invoice.number)} kutoka kwa ${businessName(invoice.merchantName)}`,
    `Kiasi: ${money(invoice.amount)}`,
    `Maelezo: ${descriptionShown(invoice.description)}`,
    ...(invoice.dueDate === null ? [] : [`Mwisho wa kulipa: ${daySw(invoice.dueDate)}`]),
    '',
    closing,
  ].join('\n');
}

const sw: Texts = {
  askBusinessName: () =>
    text(
      'Habari! Mimi ni InvoiceIQ. Ninatuma ankara za M-PESA kwa wateja wako kupitia WhatsApp na kukujulisha wakishalipa.\n\n' +
        'Kwanza, jina la biashara yako ni nini? (mfano: Mama Njeri Groceries)\n\n' +
        'For English, type: language en',
    ),
  businessNameInvalid: () => text('Tafadhali tuma jina la biashara yako: herufi 1 hadi 60.'),
  registered: (name) =>
    buttons(
      `Karibu, ${businessName(name)}! Uko tayari.\n\n` +
        'Kumtumia mteja ankara, bonyeza Ankara mpya, au tuma yote kwa ujumbe mmoja:\nankara 0712345678 1500 Keki',
      SW_MENU,
    ),

  menu: () => buttons('Ungependa kufanya nini?', SW_MENU),
  help: () =>
    buttons(
      [
        'Haya ndiyo ninayoweza kufanya:',
        '',
        'ankara / new - tengeneza ankara hatua kwa hatua',
        'ankara 0712345678 1500 Keki - tengeneza ankara kwa ujumbe mmoja (au invoice ...)',
        'orodha / list - ankara zako 10 za mwisho',
        'hali 7 / status 7 - maelezo ya INV-0007',
        'kumbusha 7 / remind 7 - mtumie mteja INV-0007 tena, na ombi jipya la M-PESA',
        'ghairi 7 / cancel 7 - ghairi ankara ambayo haijalipwa',
        'muhtasari / summary - jumla ya hesabu zako',
        'lugha sw | en (language en | sw) - badilisha lugha',
        'ghairi, acha, cancel au stop - acha ankara unayotengeneza',
        'msaada / help - ujumbe huu',
      ].join('\n'),
      SW_MENU,
    ),
  unknownCommand: () => buttons('Samahani, sijaelewa. Bonyeza kitufe hapa chini, au andika msaada uone yote ninayoweza kufanya.', SW_MENU),
  onlyTextAndButtons: () => text('Samahani, ninaweza kusoma maandishi na vitufe tu. Tafadhali andika ujumbe wako.'),
  staleButton: () => text('Kitufe hicho ni cha ujumbe wa zamani na hakifanyi kazi tena. Andika menu uone unachoweza kufanya.'),
  stateReset: () => buttons('Samahani, nimepoteza mwelekeo wa mazungumzo yetu. Tuanze upya kutoka kwenye menyu.', SW_MENU),

  askCustomer: () => text('Ankara mpya. Nambari ya simu ya M-PESA ya mteja ni ipi?\nMfano: 0712 345 678\n\n(Andika ghairi kuacha.)'),
  invalidPhone: () => text('Hiyo haionekani kuwa nambari ya simu ya Kenya. Jaribu kama 0712 345 678.'),
  askAmount: (customerPhone) => text(`${phone(customerPhone)} alipe kiasi gani? Tuma kiasi kwa shilingi, mfano 1500.`),
  invalidAmount: (reason, max) => {
    switch (reason) {
      case 'invalid_amount':
        return text('Sijaelewa kiasi hicho. Tuma shilingi kamili, mfano 1500 au 1,500.');
      case 'decimal_amount':
        return text('M-PESA inakubali shilingi kamili tu, bila senti. Tuma mfano 1500 badala ya 1500.50.');
      case 'amount_too_small':
        return text(`Kiasi lazima kiwe angalau ${money(1)}.`);
      case 'amount_too_large':
        return text(`Ankara moja haiwezi kuzidi ${money(max)}. Tafadhali tuma kiasi kidogo zaidi.`);
    }
  },
  askDescription: () => text('Ni ya nini? Tuma maelezo mafupi, mfano mifuko 2 ya saruji (hadi herufi 100).'),
  invalidDescription: (reason) =>
    text(
      reason === 'description_empty'
        ? 'Maelezo hayawezi kuwa tupu. Tuma maneno machache kuhusu ni ya nini (hadi herufi 100).'
        : 'Hayo ni marefu mno: maelezo yasizidi herufi 100. Tafadhali tuma mafupi zaidi.',
    ),
  confirm: (draft, dueDate, duplicateOf) =>
    buttons(
      [
        'Tafadhali hakikisha ankara hii:',
        `Mteja: ${phone(draft.customerPhone)}`,
        `Kiasi: ${money(draft.amount)}`,
        `Maelezo: ${descriptionShown(draft.description)}`,
        `Mwisho wa kulipa: ${daySw(dueDate)}`,
        ...(duplicateOf === null
          ? []
          : ['', `⚠️ Dakika chache zilizopita ulimtumia mteja huyu ${inv(duplicateOf)} ya kiasi hiki hiki. Bonyeza Tuma tu kama unataka ankara ya pili.`]),
        '',
        'Nimtumie mteja?',
      ].join('\n'),
      SW_CONFIRM,
    ),
  confirmHint: () => buttons('Bonyeza Tuma kutuma ankara hii au Ghairi kuiacha (au andika ndio / hapana).', SW_CONFIRM),
  draftCancelled: () => buttons('Sawa, nimeghairi. Hakuna kilichotumwa.', SW_MENU),
  draftExpired: () => text('Ankara uliyokuwa ukitengeneza imeisha muda baada ya dakika 30 bila jibu, kwa hivyo nimeiacha. Hakuna kilichotumwa.'),
  nothingToCancel: () => text('Hakuna cha kughairi sasa hivi. Kughairi ankara uliyotuma, andika mfano ghairi 7.'),
  merchantOnWhatsApp: () =>
    text('Kwa usalama wako, ankara hutengenezwa, hukumbushwa na kughairiwa kwenye WhatsApp pekee: tuandikie huko. Kwa SMS tumia orodha, hali 7 au muhtasari.'),
  registerOnWhatsApp: () => text('Kusajili biashara yako, tafadhali tuandikie kwenye WhatsApp. Kwa SMS unaweza kulipa ankara: jibu LIPA.'),

  invalidInvoiceNumber: (command) =>
    text(`Ankara ipi? Andika nambari yake, mfano ${SW_COMMAND[command]} 7 au ${SW_COMMAND[command]} INV-0007.`),
  askLanguage: () => buttons('Nitumie lugha gani?\nWhich language should I use?', LANGUAGE_BUTTONS),
  languageSet: () => text('Sawa! Kuanzia sasa nitakujibu kwa Kiswahili.'),

  invoiceCreated: (number, customerPhone, amount) =>
    buttons(
      `✅ ${inv(number)} ya ${money(amount)} imetengenezwa na inatumwa kwa ${phone(customerPhone)}. ` +
        'Atapokea ombi la M-PESA, nami nitakujulisha ikilipwa.',
      SW_MENU,
    ),
  invoiceList: (lines) => {
    if (lines.length === 0) return buttons('Bado huna ankara yoyote. Bonyeza Ankara mpya kutengeneza ya kwanza.', [SW_MENU[0]!]);
    const example = lines[0]!.number;
    return buttons(
      listBody(
        'Ankara zako za hivi karibuni:',
        lines,
        (l) => `${inv(l.number)} · ${phone(l.customerPhone)} · ${money(l.amount)} · ${statusWord(SW_STATUS, l)}`,
        `Kwa maelezo zaidi, andika hali na nambari, mfano hali ${example}.`,
      ),
      [SW_MENU[0]!],
    );
  },
  invoiceDetail: (detail) => {
    const { shown, hidden } = latestAttempts(detail.attempts);
    const attempts =
      shown.length === 0
        ? ['Bado hakuna jaribio la malipo.']
        : [
            'Majaribio ya malipo:',
            ...(hidden > 0 ? [`(${hidden} ya awali hayajaonyeshwa)`] : []),
            ...shown.map(
              (a) =>
                `• ${dayAndTime(a.at, MONTHS.swShort)} - ${attemptWord(SW_ATTEMPT, a.status)}` +
                (a.resultDesc === null || oneLine(a.resultDesc) === '' ? '' : `: ${clip(oneLine(a.resultDesc), RESULT_DESC_SHOWN_MAX)}`),
            ),
          ];
    const paid =
      detail.paidAt === null && detail.mpesaReceipt === null
        ? []
        : [
            `Imelipwa: ${detail.paidAt === null ? '-' : daySw(detail.paidAt)}` +
              (detail.mpesaReceipt === null ? '' : `, risiti ya M-PESA ${clip(oneLine(detail.mpesaReceipt), 20)}`),
          ];
    return text(
      [
        `${inv(detail.number)} · ${statusWord(SW_STATUS, detail)}`,
        `Mteja: ${phone(detail.customerPhone)}`,
        `Kiasi: ${money(detail.amount)}`,
        `Maelezo: ${descriptionShown(detail.description)}`,
        `Ilitengenezwa: ${daySw(detail.createdAt)}`,
        ...(detail.dueDate === null
          ? []
          : [`Mwisho wa kulipa: ${daySw(detail.dueDate)}${detail.overdue && detail.status !== 'paid' && detail.status !== 'cancelled' ? ' (imechelewa)' : ''}`]),
        ...paid,
        '',
        ...attempts,
      ].join('\n'),
    );
  },
  invoiceNotFound: (number) => text(`Sijapata ${inv(number)} kwenye ankara zako. Andika orodha uone za hivi karibuni.`),
  reminderSent: (number, customerPhone, prompt = 'new') =>
    prompt === 'new'
      ? text(`Nimemkumbusha ${phone(customerPhone)} kuhusu ${inv(number)} na kumtumia ombi jipya la M-PESA.`)
      : text(
          `Nimemkumbusha ${phone(customerPhone)} kuhusu ${inv(number)}. Ombi la M-PESA lililotumwa chini ya dakika 2 zilizopita huenda bado liko kwenye simu yake, ` +
            'kwa hivyo sijamtumia jipya: anaweza kuweka PIN yake kwenye ombi hilo, au kubonyeza Lipa sasa kwenye kikumbusho baada ya dakika 2 apate ombi jipya.',
        ),
  invoiceUnreachedSms: (number, customerPhone) =>
    `InvoiceIQ: ankara ${formatInvoiceNumber(number)} haikumfikia ${phone(customerPhone)} kwa WhatsApp wala SMS. Hakikisha nambari; jibu hali ${number} uione.`,
  invoiceUnreached: (number, customerPhone) =>
    text(
      `⚠️ Ankara ${inv(number)} haikumfikia ${phone(customerPhone)} kwa WhatsApp wala kwa SMS. ` +
        `Hakikisha nambari ni sahihi; andika hali ${number} uione, au tengeneza ankara mpya yenye nambari sahihi.`,
    ),
  cannotRemind: (number, status) =>
    text(
      status === 'paid'
        ? `${inv(number)} imeshalipwa, hakuna haja ya kukumbusha.`
        : `${inv(number)} ilighairiwa, kwa hivyo siwezi kutuma kikumbusho chake.`,
    ),
  invoiceCancelled: (number) => text(`${inv(number)} imeghairiwa. Nimemjulisha mteja kwamba hahitaji kuilipa.`),
  cannotCancel: (number, status) =>
    text(
      status === 'paid'
        ? `${inv(number)} imeshalipwa, kwa hivyo haiwezi kughairiwa. Kurudisha pesa, mtumie mteja kupitia M-PESA.`
        : `${inv(number)} ilishaghairiwa.`,
    ),
  summary: (s: MerchantSummary) =>
    text(
      [
        'Muhtasari wako:',
        `Ankara zilizotumwa: ${s.sent}`,
        `Zilizolipwa: ${s.paid}`,
        `Bado hazijalipwa: ${money(s.outstandingAmount)}`,
        `Zilizochelewa: ${s.overdue}`,
        `Pesa zilizokusanywa mwezi huu: ${money(s.collectedThisMonth)}`,
      ].join('\n'),
    ),

  invoiceToCustomer: (merchantName, number, amount, description, dueDate, customerPhone, invoiceId) =>
    buttons(
      [
        `Habari! Umepokea ankara kutoka kwa ${businessName(merchantName)}.`,
        '',
        `Ankara: ${inv(number)}`,
        `Kiasi: ${money(amount)}`,
        `Maelezo: ${descriptionShown(description)}`,
        `Mwisho wa kulipa: ${daySw(dueDate)}`,
        '',
        `Utapokea ombi la M-PESA kwenye ${phone(customerPhone)}. Weka PIN yako kulipa.`,
        'Hujapata ombi? Bonyeza Lipa sasa.',
      ].join('\n'),
      [swPay(number, invoiceId)],
    ),
  invoiceToCustomerSms: (merchantName, number, amount, description, dueDate) =>
    fitSms(
      (name, desc) =>
        `${sentence(`Ankara ${formatInvoiceNumber(number)} kutoka kwa ${name}: ${formatAmount(amount)}${desc === '' ? '' : ` ya ${desc}`}`)} ` +
        `Lipa kufikia ${day(dueDate, MONTHS.swShort)}. Jibu LIPA kulipa kwa M-PESA.`,
      merchantName,
      description,
    ),
  invoiceCancelledToCustomer: (merchantName, number) =>
    text(`Ankara ${inv(number)} kutoka kwa ${businessName(merchantName)} imeghairiwa. Huhitaji kuilipa.`),
  reminderToCustomer: (merchantName, number, amount, dueDate, invoiceId) =>
    buttons(
      `Kikumbusho: ankara ${inv(number)} kutoka kwa ${businessName(merchantName)} ya ${money(amount)} inapaswa kulipwa kufikia tarehe ${daySw(dueDate)}.\n\n` +
        'Bonyeza Lipa sasa upokee ombi la M-PESA, kisha weka PIN yako.',
      [swPay(number, invoiceId)],
    ),
  customerInvoices: (invoices) => {
    const [only] = invoices;
    if (only === undefined) return text('Huna ankara ya kulipa kwa sasa.');
    if (invoices.length === 1) return buttons(swCustomerInvoice(only, 'Bonyeza Lipa sasa upokee ombi la M-PESA, kisha weka PIN yako.'), [swPay(only.number, only.id)]);
    const more = invoices.length > LIST_ROWS_MAX ? ` Hizi ni ${LIST_ROWS_MAX} za kwanza.` : '';
    return payList(`Una ankara ${invoices.length} ambazo hazijalipwa.${more} Bonyeza Chagua ankara uchague utakayolipa.`, 'Chagua ankara', invoices);
  },
  customerPayPending: (invoice) => text(swCustomerInvoice(invoice, 'Ombi la M-PESA linakuja kwenye simu yako. Weka PIN yako kulipa.')),

  promptSent: (invoice, customerPhone) =>
    text(
      `Angalia simu yako ${phone(customerPhone)} na uweke PIN yako ya M-PESA ili ulipe ankara ${inv(invoice.number)} ` +
        `ya ${money(invoice.amount)} kwa ${businessName(invoice.merchantName)}.\n` +
        `Maelezo: ${descriptionShown(invoice.description)}\n\n` +
        'Hujapata ombi baada ya dakika 2? Jibu LIPA ujaribu tena.',
    ),
  promptStillPending: (number) =>
    text(
      `Ombi la M-PESA la ${inv(number)} lilitumwa chini ya dakika 2 zilizopita. Angalia simu yako na uweke PIN yako, ` +
        'au kama halijafika, jibu LIPA tena baada ya dakika chache.',
    ),
  promptNotStarted: (number, outcome = 'refused', invoiceId) =>
    outcome === 'refused'
      ? buttons(
          `Samahani, M-PESA haikuweza kutuma ombi la malipo la ${inv(number)} sasa hivi. ` +
            'Tafadhali subiri dakika moja, kisha bonyeza Lipa sasa (au jibu LIPA) ujaribu tena.',
          [swPay(number, invoiceId)],
        )
      : buttons(
          `M-PESA haikuthibitisha ombi la malipo la ${inv(number)}. Kama ombi limefika kwenye simu yako, weka PIN yako ulipe. ` +
            'Kama halijafika, subiri dakika 2, kisha bonyeza Lipa sasa (au jibu LIPA) ujaribu tena.',
          [swPay(number, invoiceId)],
        ),
  alreadyPaid: (number) => text(`${inv(number)} imeshalipwa, kwa hivyo hakuna cha kulipa zaidi. Asante!`),
  dashboardLink: (url) => text(`Dashibodi yako: ${url}\n\nKiungo hiki kinatumika mara moja tu na kinaisha baada ya dakika 15. Usimpe mtu mwingine: kinafungua takwimu zako.`),
  dashboardUnavailable: () => text(`Dashibodi bado haijawekwa kwenye huduma hii. Andika *muhtasari* kuona takwimu zako hapa.`),
  receiptToCustomer: (merchantName, number, amount, receipt) => {
    const shown = receiptShown(receipt);
    return text(
      `Asante! Umelipa ${money(amount)} kwa ${businessName(merchantName)}, ankara ${inv(number)}.\n` +
        (shown === null ? 'Malipo yamethibitishwa na M-PESA.' : `Risiti ya M-PESA: ${shown}`),
    );
  },
  receiptToCustomerSms: (merchantName, number, amount, receipt) => {
    const shown = receiptShown(receipt);
    return fitSmsName(
      (name) =>
        `Umelipa ${formatAmount(amount)} kwa ${name}, ankara ${formatInvoiceNumber(number)}. ` +
        (shown === null ? 'Malipo yamethibitishwa na M-PESA.' : `Risiti ya M-PESA ${shown}.`) +
        ' Asante!',
      merchantName,
    );
  },
  paidToMerchant: (number, amount, payerPhone, receipt, options) => {
    const shown = receiptShown(receipt);
    return text(
      [
        `✅ ${inv(number)} imelipwa: ${money(amount)}.`,
        // On its own line: the mask's asterisks must not pair with the bold markers above.
        `Mlipaji: ${maskPhone(payerPhone)}`,
        shown === null ? 'M-PESA imethibitisha malipo lakini haikutuma nambari ya risiti.' : `Risiti ya M-PESA: ${shown}`,
        ...(options?.wasCancelled === true
          ? ['', 'Ulikuwa umeighairi ankara hii, lakini mteja alilipa ombi la M-PESA alilokuwa nalo tayari, kwa hivyo sasa imewekwa kuwa imelipwa. Kama ulimtumia ankara nyingine kwa kitu hicho hicho, mrudishie moja ya malipo hayo mawili.']
          : []),
      ].join('\n'),
    );
  },
  paymentFailedToCustomer: (merchantName, number, amount, options, invoiceId) =>
    options?.fromQuery === true
      ? buttons(
          `M-PESA haijathibitisha malipo yako ya ${money(amount)} kwa ankara ${inv(number)} kutoka kwa ${businessName(merchantName)}.\n\n` +
            `Kama M-PESA tayari ilikutumia SMS ya uthibitisho kwa malipo haya, usilipe tena: mwonyeshe ${businessName(merchantName)} SMS hiyo. ` +
            'La sivyo bonyeza Lipa sasa (au jibu LIPA) upokee ombi jipya la M-PESA ujaribu tena.',
          [swPay(number, invoiceId)],
        )
      : buttons(
          `Malipo yako ya ${money(amount)} kwa ankara ${inv(number)} kutoka kwa ${businessName(merchantName)} hayajakamilika.\n\n` +
            'Bonyeza Lipa sasa (au jibu LIPA) upokee ombi jipya la M-PESA ujaribu tena.',
          [swPay(number, invoiceId)],
        ),
  paymentFailedToCustomerSms: (merchantName, number, amount, options) =>
    options?.fromQuery === true
      ? fitSmsName(
          (name) =>
            `M-PESA haijathibitisha malipo ya ${formatAmount(amount)} kwa ${formatInvoiceNumber(number)} kutoka kwa ${name}. ` +
            'Jibu LIPA ujaribu tena, isipokuwa M-PESA imekwisha kukuthibitishia.',
          merchantName,
        )
      : fitSmsName(
          (name) =>
            `Malipo ya ${formatAmount(amount)} kwa ankara ${formatInvoiceNumber(number)} kutoka kwa ${name} hayajakamilika. ` +
            'Jibu LIPA upokee ombi jipya la M-PESA.',
          merchantName,
        ),
  paymentFailedToMerchant: (number, reason, options) =>
    text(
      `${inv(number)} bado haijalipwa: ${failureWords(SW_FAILURE, reason)}\n\n${swFailureAdvice(number, reason)}` +
        (options?.fromQuery === true
          ? '\n\nHili limeripotiwa na ukaguzi wa hali wa M-PESA, si na malipo yenyewe, na ukaguzi huo hukosea wakati mwingine: mteja akikuonyesha uthibitisho wa M-PESA, angalia taarifa yako ya M-PESA kabla ya kumwomba alipe tena.'
          : ''),
    ),
  paidTwiceToMerchant: (number, amount, receipt) => {
    const shown = receiptShown(receipt);
    return text(
      `⚠️ ${inv(number)} imelipwa mara mbili: M-PESA imethibitisha malipo ya pili ya ${money(amount)}${shown === null ? '' : ` (risiti ${shown})`}.\n\n` +
        `Ankara inabaki kama imelipwa. Mrudishie mteja moja ya malipo hayo mawili. Andika hali ${number} uone majaribio.`,
    );
  },
  paymentNeedsReview: (number, expected, received, options = { alreadyPaid: false }) =>
    text(
      (received === null
        ? `⚠️ Malipo yamepokelewa kwa ${inv(number)}, lakini M-PESA haikutaja kiasi kilicholipwa; ankara ni ya ${money(expected)}.\n\n`
        : `⚠️ Malipo ya ${money(received)} yamepokelewa kwa ${inv(number)}, lakini ankara ni ya ${money(expected)}.\n\n`) +
        (options.alreadyPaid
          ? 'Ankara inabaki kama imelipwa, kama M-PESA ilivyothibitisha awali; malipo haya yamehifadhiwa ili yakaguliwe. '
          : 'Sijaiweka kama imelipwa; malipo haya yamehifadhiwa ili yakaguliwe. ') +
        (received === null
          ? 'Angalia jumbe zako za M-PESA uone kiasi kilicholipwa, na umalizane na mteja kuhusu tofauti yoyote. '
          : 'Angalia jumbe zako za M-PESA na umalizane na mteja kuhusu tofauti hiyo. ') +
        `Andika hali ${number} uone majaribio.`,
    ),
  reminderDue: (merchantName, number, amount, dueDate, when, invoiceId) =>
    buttons(
      `Kikumbusho: ankara ${inv(number)} kutoka kwa ${businessName(merchantName)} ya ${money(amount)} inapaswa kulipwa ` +
        `${when === 'today' ? 'leo' : 'kesho'}, tarehe ${daySw(dueDate)}.\n\n` +
        'Bonyeza Lipa sasa upokee ombi la M-PESA, kisha weka PIN yako.',
      [swPay(number, invoiceId)],
    ),
  reminderDueSms: (merchantName, number, amount, dueDate, when) =>
    fitSmsName(
      (name) =>
        `Kikumbusho: ankara ${formatInvoiceNumber(number)} kutoka kwa ${name} ya ${formatAmount(amount)} inapaswa kulipwa ` +
        `${when === 'today' ? 'leo' : 'kesho'}, ${day(dueDate, MONTHS.swShort)}. Jibu LIPA kulipa kwa M-PESA.`,
      merchantName,
    ),
};

export const texts: TextsByLanguage = { en, sw };
