/**
 * Every message in both languages: WhatsApp's limits (the outbound zod schemas), the button-id
 * contract, the formats (KES 1,500 / 0712 345 678 / INV-0007 / Nairobi dates), nothing left
 * untranslated, the customer SMS, and random names and descriptions (fast-check).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { MessageContent } from '../src/domain/outbound.js';
import { converse, IDLE } from '../src/domain/conversation/machine.js';
import { payButtonId, templateName, texts } from '../src/domain/texts.js';
import type { CustomerInvoice, InvoiceDetail, InvoiceLine, PaymentFailureReason, Texts } from '../src/domain/texts.types.js';

type Language = keyof typeof texts;
const languages: readonly Language[] = ['en', 'sw'];

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

const PHONE = '254712345678';
const SHOWN_PHONE = '0712 345 678';
const OTHER_PHONE = '254112345678';
/** 22:30 UTC on the 28th is 01:30 on the 29th in Nairobi. */
const DUE = new Date('2026-11-28T22:30:00.000Z');
const CREATED = new Date('2026-11-22T06:05:00.000Z');
const NAME = 'Mama Njeri Shop';
/** 60 code points (the business-name limit), emoji included (a flag, a ZWJ family, skin tone). */
const LONG_NAME = [...'🛒 Mama Njeri Fresh Groceries & Hardware 🇰🇪 👨‍👩‍👧 Kariakor Market 👍🏾 Stall'].slice(0, 60).join('');
const DESCRIPTION = '2 bags of cement';
/** 100 characters (the description limit), an emoji at the end. */
const LONG_DESCRIPTION = `${'Supply and delivery of 20 bags of cement, 10 iron sheets (gauge 30) and nails to Kitengela site'.padEnd(98, '.')}🧱`;
const MAX = 250_000;

const line = (number: number, overrides: Partial<InvoiceLine> = {}): InvoiceLine => ({
  number,
  customerPhone: PHONE,
  amount: 1500,
  status: 'sent',
  overdue: false,
  ...overrides,
});
const statuses = ['pending', 'sent', 'paid', 'failed', 'cancelled'];
const tenLines = Array.from({ length: 10 }, (_, i) => line(i + 1, { status: statuses[i % statuses.length]!, overdue: i % 3 === 0 }));
const tenExtremeLines = Array.from({ length: 10 }, (_, i) =>
  line(9990 + i, { amount: MAX, customerPhone: OTHER_PHONE, status: i === 0 ? 'a-status-nobody-expected-and-very-long' : 'failed' }),
);

const detail = (overrides: Partial<InvoiceDetail> = {}): InvoiceDetail => ({
  ...line(7),
  description: DESCRIPTION,
  createdAt: CREATED,
  dueDate: DUE,
  paidAt: null,
  mpesaReceipt: null,
  attempts: [],
  ...overrides,
});
const manyAttempts = Array.from({ length: 30 }, (_, i) => ({
  at: new Date(CREATED.getTime() + i * 60_000),
  status: ['pending', 'succeeded', 'failed', 'expired', 'weird'][i % 5]!,
  resultDesc: i % 4 === 0 ? null : `The balance is insufficient for the transaction. ${'x'.repeat(200)}`,
}));

const customerInvoice = (number: number, overrides: Partial<CustomerInvoice> = {}): CustomerInvoice => ({
  merchantName: NAME,
  number,
  amount: 1500,
  description: DESCRIPTION,
  dueDate: DUE,
  ...overrides,
});
const RECEIPT = 'NLJ7RT61SV';
/** Whatever M-PESA might send as a receipt: long, several lines, odd characters. */
const ODD_RECEIPT = `NLJ7RT61SV\n${'Z'.repeat(200)} *bold* 🙂`;
/** The payer's number as M-PESA or a caller might give it; none may reach the merchant whole. */
const PAYER_FORMS = ['254712345678', '0712345678', '+254 712 345 678', '712345678', '254712***678'];
const FAILURE_REASONS: readonly PaymentFailureReason[] = ['cancelled', 'unreachable', 'wrong_pin', 'insufficient_funds', 'limit', 'expired', 'no_answer', 'other'];
const tenCustomerInvoices = Array.from({ length: 10 }, (_, i) =>
  customerInvoice(i + 1, { merchantName: LONG_NAME, description: LONG_DESCRIPTION, amount: MAX }),
);

// ---------------------------------------------------------------------------
// Every function, ordinary and extreme inputs, with the button ids each must carry
// ---------------------------------------------------------------------------

const MENU = ['new_invoice', 'list', 'help'];
const CONFIRM = ['confirm_send', 'cancel_draft'];
const LANG = ['lang:en', 'lang:sw'];
const pay = (n: string) => [`pay:${n}`];

type Case<R> = { label: string; out: R; ids: readonly string[] };
type Cases = { [K in keyof Texts]: (t: Texts) => Array<Case<ReturnType<Texts[K]>>> };

const cases: Cases = {
  askBusinessName: (t) => [{ label: 'first contact', out: t.askBusinessName(), ids: [] }],
  businessNameInvalid: (t) => [{ label: 'invalid', out: t.businessNameInvalid(), ids: [] }],
  registered: (t) => [
    { label: 'ordinary', out: t.registered(NAME), ids: MENU },
    { label: '60-char name with emoji', out: t.registered(LONG_NAME), ids: MENU },
  ],
  menu: (t) => [{ label: 'menu', out: t.menu(), ids: MENU }],
  help: (t) => [{ label: 'help', out: t.help(), ids: MENU }],
  unknownCommand: (t) => [{ label: 'unknown', out: t.unknownCommand(), ids: MENU }],
  onlyTextAndButtons: (t) => [{ label: 'media', out: t.onlyTextAndButtons(), ids: [] }],
  staleButton: (t) => [{ label: 'stale', out: t.staleButton(), ids: [] }],
  stateReset: (t) => [{ label: 'reset', out: t.stateReset(), ids: MENU }],
  merchantOnWhatsApp: (t) => [{ label: 'by SMS', out: t.merchantOnWhatsApp(), ids: [] }],
  registerOnWhatsApp: (t) => [{ label: 'by SMS', out: t.registerOnWhatsApp(), ids: [] }],
  askCustomer: (t) => [{ label: 'ask', out: t.askCustomer(), ids: [] }],
  invalidPhone: (t) => [{ label: 'invalid', out: t.invalidPhone(), ids: [] }],
  askAmount: (t) => [
    { label: '07 number', out: t.askAmount(PHONE), ids: [] },
    { label: '01 number', out: t.askAmount(OTHER_PHONE), ids: [] },
  ],
  invalidAmount: (t) => [
    { label: 'invalid_amount', out: t.invalidAmount('invalid_amount', MAX), ids: [] },
    { label: 'decimal_amount', out: t.invalidAmount('decimal_amount', MAX), ids: [] },
    { label: 'amount_too_small', out: t.invalidAmount('amount_too_small', MAX), ids: [] },
    { label: 'amount_too_large', out: t.invalidAmount('amount_too_large', MAX), ids: [] },
  ],
  askDescription: (t) => [{ label: 'ask', out: t.askDescription(), ids: [] }],
  invalidDescription: (t) => [
    { label: 'description_empty', out: t.invalidDescription('description_empty'), ids: [] },
    { label: 'description_too_long', out: t.invalidDescription('description_too_long'), ids: [] },
  ],
  confirm: (t) => [
    { label: 'ordinary', out: t.confirm({ customerPhone: PHONE, amount: 1500, description: DESCRIPTION }, DUE, null), ids: CONFIRM },
    { label: 'duplicate of 7', out: t.confirm({ customerPhone: PHONE, amount: 1500, description: DESCRIPTION }, DUE, 7), ids: CONFIRM },
    { label: 'extreme', out: t.confirm({ customerPhone: OTHER_PHONE, amount: MAX, description: LONG_DESCRIPTION }, DUE, 9999), ids: CONFIRM },
    { label: '400-char description', out: t.confirm({ customerPhone: PHONE, amount: MAX, description: 'y'.repeat(400) }, DUE, 9999), ids: CONFIRM },
  ],
  confirmHint: (t) => [{ label: 'hint', out: t.confirmHint(), ids: CONFIRM }],
  draftCancelled: (t) => [{ label: 'cancelled', out: t.draftCancelled(), ids: MENU }],
  draftExpired: (t) => [{ label: 'expired', out: t.draftExpired(), ids: [] }],
  nothingToCancel: (t) => [{ label: 'nothing', out: t.nothingToCancel(), ids: [] }],
  invalidInvoiceNumber: (t) => [
    { label: 'status', out: t.invalidInvoiceNumber('status'), ids: [] },
    { label: 'remind', out: t.invalidInvoiceNumber('remind'), ids: [] },
    { label: 'cancel', out: t.invalidInvoiceNumber('cancel'), ids: [] },
  ],
  askLanguage: (t) => [{ label: 'ask', out: t.askLanguage(), ids: LANG }],
  languageSet: (t) => [{ label: 'set', out: t.languageSet(), ids: [] }],
  invoiceCreated: (t) => [
    { label: 'ordinary', out: t.invoiceCreated(7, PHONE, 1500), ids: MENU },
    { label: 'extreme', out: t.invoiceCreated(9999, OTHER_PHONE, MAX), ids: MENU },
  ],
  invoiceList: (t) => [
    { label: 'empty', out: t.invoiceList([]), ids: ['new_invoice'] },
    { label: 'one', out: t.invoiceList([line(7)]), ids: ['new_invoice'] },
    { label: '10 lines', out: t.invoiceList(tenLines), ids: ['new_invoice'] },
    { label: '10 extreme lines', out: t.invoiceList(tenExtremeLines), ids: ['new_invoice'] },
  ],
  invoiceDetail: (t) => [
    { label: 'unpaid, no attempts', out: t.invoiceDetail(detail()), ids: [] },
    {
      label: 'paid with receipt',
      out: t.invoiceDetail(
        detail({
          status: 'paid',
          paidAt: new Date('2026-11-23T10:00:00Z'),
          mpesaReceipt: 'QK12ABC3DE',
          attempts: [{ at: CREATED, status: 'succeeded', resultDesc: 'The service request is processed successfully.' }],
        }),
      ),
      ids: [],
    },
    {
      label: 'extreme: overdue, long description, 30 attempts, no due date',
      out: t.invoiceDetail(detail({ number: 9999, amount: MAX, description: LONG_DESCRIPTION, overdue: true, dueDate: null, attempts: manyAttempts })),
      ids: [],
    },
    { label: 'overdue', out: t.invoiceDetail(detail({ overdue: true })), ids: [] },
  ],
  invoiceNotFound: (t) => [{ label: '7', out: t.invoiceNotFound(7), ids: [] }],
  reminderSent: (t) => [
    { label: 'sent', out: t.reminderSent(7, PHONE), ids: [] },
    { label: 'new prompt', out: t.reminderSent(7, PHONE, 'new'), ids: [] },
    { label: 'earlier prompt pending', out: t.reminderSent(7, PHONE, 'pending'), ids: [] },
    { label: 'earlier prompt pending, extreme', out: t.reminderSent(99999, OTHER_PHONE, 'pending'), ids: [] },
  ],
  invoiceUnreachedSms: (t) => [
    { label: 'ordinary', out: t.invoiceUnreachedSms(7, PHONE), ids: [] },
    { label: 'extreme', out: t.invoiceUnreachedSms(99999, OTHER_PHONE), ids: [] },
  ],
  invoiceUnreached: (t) => [
    { label: 'ordinary', out: t.invoiceUnreached(7, PHONE), ids: [] },
    { label: 'extreme', out: t.invoiceUnreached(99999, OTHER_PHONE), ids: [] },
  ],
  cannotRemind: (t) => [
    { label: 'paid', out: t.cannotRemind(7, 'paid'), ids: [] },
    { label: 'cancelled', out: t.cannotRemind(7, 'cancelled'), ids: [] },
  ],
  invoiceCancelled: (t) => [{ label: 'cancelled', out: t.invoiceCancelled(7), ids: [] }],
  cannotCancel: (t) => [
    { label: 'paid', out: t.cannotCancel(7, 'paid'), ids: [] },
    { label: 'cancelled', out: t.cannotCancel(7, 'cancelled'), ids: [] },
  ],
  summary: (t) => [
    { label: 'ordinary', out: t.summary({ sent: 12, paid: 9, outstandingAmount: 4500, collectedThisMonth: 23000, overdue: 2 }), ids: [] },
    { label: 'zeros', out: t.summary({ sent: 0, paid: 0, outstandingAmount: 0, collectedThisMonth: 0, overdue: 0 }), ids: [] },
    { label: 'big', out: t.summary({ sent: 99999, paid: 99998, outstandingAmount: 2_500_000_000, collectedThisMonth: 250_000_000, overdue: 1 }), ids: [] },
  ],
  invoiceToCustomer: (t) => [
    { label: 'ordinary', out: t.invoiceToCustomer(NAME, 7, 1500, DESCRIPTION, DUE, PHONE), ids: pay('INV-0007') },
    { label: 'extreme', out: t.invoiceToCustomer(LONG_NAME, 9999, MAX, LONG_DESCRIPTION, DUE, OTHER_PHONE), ids: pay('INV-9999') },
  ],
  invoiceToCustomerSms: (t) => [
    { label: 'ordinary', out: t.invoiceToCustomerSms(NAME, 7, 1500, DESCRIPTION, DUE), ids: [] },
    { label: 'long description', out: t.invoiceToCustomerSms(NAME, 7, 1500, LONG_DESCRIPTION, DUE), ids: [] },
    { label: 'extreme', out: t.invoiceToCustomerSms(LONG_NAME, 9999, MAX, LONG_DESCRIPTION, DUE), ids: [] },
  ],
  invoiceCancelledToCustomer: (t) => [
    { label: 'ordinary', out: t.invoiceCancelledToCustomer(NAME, 7), ids: [] },
    { label: 'extreme', out: t.invoiceCancelledToCustomer(LONG_NAME, 9999), ids: [] },
  ],
  reminderToCustomer: (t) => [
    { label: 'ordinary', out: t.reminderToCustomer(NAME, 7, 1500, DUE), ids: pay('INV-0007') },
    { label: 'extreme', out: t.reminderToCustomer(LONG_NAME, 9999, MAX, DUE), ids: pay('INV-9999') },
  ],
  customerInvoices: (t) => [
    { label: 'none', out: t.customerInvoices([]), ids: [] },
    { label: 'one', out: t.customerInvoices([customerInvoice(7)]), ids: pay('INV-0007') },
    { label: 'one, extreme, no due date', out: t.customerInvoices([customerInvoice(7, { merchantName: LONG_NAME, description: LONG_DESCRIPTION, amount: MAX, dueDate: null })]), ids: pay('INV-0007') },
    { label: 'two', out: t.customerInvoices([customerInvoice(7), customerInvoice(8, { amount: 250 })]), ids: [...pay('INV-0007'), ...pay('INV-0008')] },
    { label: 'ten, extreme', out: t.customerInvoices(tenCustomerInvoices), ids: tenCustomerInvoices.map((i) => `pay:INV-${String(i.number).padStart(4, '0')}`) },
    {
      label: 'twelve: the first ten',
      out: t.customerInvoices([...tenCustomerInvoices, customerInvoice(11), customerInvoice(12)]),
      ids: tenCustomerInvoices.map((i) => `pay:INV-${String(i.number).padStart(4, '0')}`),
    },
    {
      label: 'two merchants, same number',
      out: t.customerInvoices([customerInvoice(7), customerInvoice(7, { merchantName: 'Otieno Hardware' }), customerInvoice(8)]),
      ids: [...pay('INV-0007'), ...pay('INV-0008')],
    },
  ],
  customerPayPending: (t) => [
    { label: 'ordinary', out: t.customerPayPending(customerInvoice(7)), ids: [] },
    { label: 'no due date', out: t.customerPayPending(customerInvoice(7, { dueDate: null })), ids: [] },
    { label: 'extreme', out: t.customerPayPending(customerInvoice(9999, { merchantName: LONG_NAME, description: LONG_DESCRIPTION, amount: MAX })), ids: [] },
  ],
  promptSent: (t) => [
    { label: 'ordinary', out: t.promptSent(customerInvoice(7), PHONE), ids: [] },
    { label: 'extreme', out: t.promptSent(customerInvoice(9999, { merchantName: LONG_NAME, description: LONG_DESCRIPTION, amount: MAX, dueDate: null }), OTHER_PHONE), ids: [] },
    { label: '400-char description', out: t.promptSent(customerInvoice(9999, { merchantName: 'n'.repeat(400), description: 'y'.repeat(400), amount: MAX }), OTHER_PHONE), ids: [] },
  ],
  promptStillPending: (t) => [
    { label: 'ordinary', out: t.promptStillPending(7), ids: [] },
    { label: 'extreme', out: t.promptStillPending(99999), ids: [] },
  ],
  promptNotStarted: (t) => [
    { label: 'ordinary', out: t.promptNotStarted(7), ids: pay('INV-0007') },
    { label: 'extreme', out: t.promptNotStarted(99999), ids: pay('INV-99999') },
  ],
  dashboardLink: (t) => [{ label: 'link', out: t.dashboardLink('https://invoiceiq.fly.dev/dashboard/login?link=abc123'), ids: [] }],
  dashboardUnavailable: (t) => [{ label: 'no public url', out: t.dashboardUnavailable(), ids: [] }],
  alreadyPaid: (t) => [
    { label: 'ordinary', out: t.alreadyPaid(7), ids: [] },
    { label: 'extreme', out: t.alreadyPaid(99999), ids: [] },
  ],
  receiptToCustomer: (t) => [
    { label: 'ordinary', out: t.receiptToCustomer(NAME, 7, 1500, RECEIPT), ids: [] },
    { label: 'no receipt', out: t.receiptToCustomer(NAME, 7, 1500, null), ids: [] },
    { label: 'blank receipt', out: t.receiptToCustomer(NAME, 7, 1500, '  '), ids: [] },
    { label: 'extreme', out: t.receiptToCustomer(LONG_NAME, 9999, MAX, ODD_RECEIPT), ids: [] },
  ],
  receiptToCustomerSms: (t) => [
    { label: 'ordinary', out: t.receiptToCustomerSms(NAME, 7, 1500, RECEIPT), ids: [] },
    { label: 'no receipt', out: t.receiptToCustomerSms(NAME, 7, 1500, null), ids: [] },
    { label: 'extreme', out: t.receiptToCustomerSms(LONG_NAME, 9999, MAX, ODD_RECEIPT), ids: [] },
  ],
  paidToMerchant: (t) => [
    { label: 'ordinary', out: t.paidToMerchant(7, 1500, PHONE, RECEIPT), ids: [] },
    { label: 'no receipt', out: t.paidToMerchant(7, 1500, PHONE, null), ids: [] },
    { label: '01 number', out: t.paidToMerchant(7, 1500, OTHER_PHONE, RECEIPT), ids: [] },
    ...PAYER_FORMS.map((p) => ({ label: `payer ${p}`, out: t.paidToMerchant(7, 1500, p, RECEIPT), ids: [] })),
    { label: 'payer in an unknown format', out: t.paidToMerchant(7, 1500, '+44 7911 123456', RECEIPT), ids: [] },
    { label: 'no payer number', out: t.paidToMerchant(7, 1500, '', RECEIPT), ids: [] },
    { label: 'extreme', out: t.paidToMerchant(99999, MAX, OTHER_PHONE, ODD_RECEIPT), ids: [] },
    { label: 'was cancelled', out: t.paidToMerchant(7, 1500, PHONE, RECEIPT, { wasCancelled: true }), ids: [] },
    { label: 'extreme, was cancelled', out: t.paidToMerchant(99999, MAX, OTHER_PHONE, ODD_RECEIPT, { wasCancelled: true }), ids: [] },
  ],
  paymentFailedToCustomer: (t) => [
    { label: 'ordinary', out: t.paymentFailedToCustomer(NAME, 7, 1500), ids: pay('INV-0007') },
    { label: 'extreme', out: t.paymentFailedToCustomer(LONG_NAME, 9999, MAX), ids: pay('INV-9999') },
    { label: '400-char name', out: t.paymentFailedToCustomer('n'.repeat(400), 9999, MAX), ids: pay('INV-9999') },
    { label: 'unconfirmed', out: t.paymentFailedToCustomer(NAME, 7, 1500, { fromQuery: true }), ids: pay('INV-0007') },
    { label: 'unconfirmed extreme', out: t.paymentFailedToCustomer('n'.repeat(400), 9999, MAX, { fromQuery: true }), ids: pay('INV-9999') },
  ],
  paymentFailedToCustomerSms: (t) => [
    { label: 'ordinary', out: t.paymentFailedToCustomerSms(NAME, 7, 1500), ids: [] },
    { label: 'extreme', out: t.paymentFailedToCustomerSms(LONG_NAME, 9999, MAX), ids: [] },
    { label: 'unconfirmed', out: t.paymentFailedToCustomerSms(NAME, 7, 1500, { fromQuery: true }), ids: [] },
    { label: 'unconfirmed extreme', out: t.paymentFailedToCustomerSms(LONG_NAME, 9999, MAX, { fromQuery: true }), ids: [] },
  ],
  paymentFailedToMerchant: (t) => [
    ...FAILURE_REASONS.map((reason) => ({ label: reason, out: t.paymentFailedToMerchant(7, reason), ids: [] })),
    { label: 'extreme', out: t.paymentFailedToMerchant(99999, 'no_answer'), ids: [] },
    { label: 'unconfirmed', out: t.paymentFailedToMerchant(7, 'cancelled', { fromQuery: true }), ids: [] },
  ],
  paidTwiceToMerchant: (t) => [
    { label: 'ordinary', out: t.paidTwiceToMerchant(7, 1500, RECEIPT), ids: [] },
    { label: 'no receipt', out: t.paidTwiceToMerchant(7, 1500, null), ids: [] },
    { label: 'extreme', out: t.paidTwiceToMerchant(99999, MAX, ODD_RECEIPT), ids: [] },
  ],
  paymentNeedsReview: (t) => [
    { label: 'ordinary', out: t.paymentNeedsReview(7, 1500, 1000), ids: [] },
    { label: 'extreme', out: t.paymentNeedsReview(99999, MAX, 1), ids: [] },
    { label: 'amount unknown', out: t.paymentNeedsReview(7, 1500, null), ids: [] },
    { label: 'amount unknown, already paid', out: t.paymentNeedsReview(99999, MAX, null, { alreadyPaid: true }), ids: [] },
  ],
  reminderDue: (t) => [
    { label: 'ordinary', out: t.reminderDue(NAME, 7, 1500, DUE, 'tomorrow'), ids: pay('INV-0007') },
    { label: 'today', out: t.reminderDue(NAME, 7, 1500, DUE, 'today'), ids: pay('INV-0007') },
    { label: 'extreme', out: t.reminderDue(LONG_NAME, 9999, MAX, DUE, 'today'), ids: pay('INV-9999') },
  ],
  reminderDueSms: (t) => [
    { label: 'ordinary', out: t.reminderDueSms(NAME, 7, 1500, DUE, 'tomorrow'), ids: [] },
    { label: 'today', out: t.reminderDueSms(NAME, 7, 1500, DUE, 'today'), ids: [] },
    { label: 'extreme', out: t.reminderDueSms(LONG_NAME, 9999, MAX, DUE, 'tomorrow'), ids: [] },
  ],
};

type AnyCase = { fn: keyof Texts; label: string; out: MessageContent | string; ids: readonly string[] };

function allCases(language: Language): AnyCase[] {
  return cached[language] ?? (cached[language] = buildCases(language));
}
const cached: Partial<Record<Language, AnyCase[]>> = {};

function buildCases(language: Language): AnyCase[] {
  const t = texts[language];
  return (Object.keys(cases) as Array<keyof Texts>).flatMap((fn) => {
    const make = cases[fn] as (t: Texts) => Array<Case<MessageContent | string>>;
    return make(t).map((c) => ({ fn, ...c }));
  });
}

const bodyOf = (out: MessageContent | string) => (typeof out === 'string' ? out : out.body);
const idsOf = (out: MessageContent | string): string[] => {
  if (typeof out === 'string' || out.type === 'text') return [];
  if (out.type === 'buttons') return out.buttons.map((b) => b.id);
  return out.sections.flatMap((s) => s.rows.map((r) => r.id));
};
const find = (language: Language, fn: keyof Texts, label: string) => {
  const found = allCases(language).find((c) => c.fn === fn && c.label === label);
  assert.ok(found, `no case ${fn} / ${label}`);
  return found.out;
};
const body = (language: Language, fn: keyof Texts, label: string) => bodyOf(find(language, fn, label));

const contractTitles: Record<Language, Record<string, string>> = {
  en: { new_invoice: 'New invoice', list: 'My invoices', help: 'Help', confirm_send: 'Send', cancel_draft: 'Cancel', 'lang:en': 'English', 'lang:sw': 'Kiswahili', pay: 'Pay now' },
  sw: { new_invoice: 'Ankara mpya', list: 'Ankara zangu', help: 'Msaada', confirm_send: 'Tuma', cancel_draft: 'Ghairi', 'lang:en': 'English', 'lang:sw': 'Kiswahili', pay: 'Lipa sasa' },
};
const CONTRACT_ID = /^(new_invoice|list|help|confirm_send|cancel_draft|lang:en|lang:sw|pay:INV-\d{4,})$/;

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

test('both languages implement the same functions, and the cases here cover every one', () => {
  assert.deepEqual(Object.keys(texts.sw).sort(), Object.keys(texts.en).sort());
  assert.deepEqual(Object.keys(cases).sort(), Object.keys(texts.en).sort());
  for (const language of languages) {
    for (const [key, value] of Object.entries(texts[language])) assert.equal(typeof value, 'function', `${language}.${key}`);
  }
});

for (const language of languages) {
  describe(`${language}: every message`, () => {
    test('parses with the outbound MessageContent schema (WhatsApp limits), body trimmed and non-empty', () => {
      for (const c of allCases(language)) {
        if (typeof c.out === 'string') continue;
        const parsed = MessageContent.safeParse(c.out);
        assert.ok(parsed.success, `${c.fn} / ${c.label}: ${parsed.success ? '' : parsed.error.message}`);
        assert.equal(c.out.body, c.out.body.trim(), `${c.fn} / ${c.label}: body is not trimmed`);
      }
    });

    test('button and row ids are exactly the contract ids, with the contract titles', () => {
      for (const c of allCases(language)) {
        assert.deepEqual(idsOf(c.out), [...c.ids], `${c.fn} / ${c.label}`);
        for (const id of idsOf(c.out)) assert.match(id, CONTRACT_ID, `${c.fn} / ${c.label}`);
        if (typeof c.out !== 'string' && c.out.type === 'buttons') {
          for (const b of c.out.buttons) {
            const expected = contractTitles[language][b.id.startsWith('pay:') ? 'pay' : b.id];
            assert.equal(b.title, expected, `${c.fn} / ${c.label}: title of ${b.id}`);
          }
        }
      }
    });

    test('phones, amounts and invoice numbers are always shown formatted', () => {
      for (const c of allCases(language)) {
        const shown = bodyOf(c.out);
        const where = `${c.fn} / ${c.label}: ${shown}`;
        assert.doesNotMatch(shown, /254[17]\d{8}/, `raw phone in ${where}`);
        assert.doesNotMatch(shown, /KES \d{4}/, `ungrouped amount in ${where}`);
        assert.doesNotMatch(shown, /INV-\d{1,3}\b/, `unpadded invoice number in ${where}`);
      }
      const has = (fn: keyof Texts, label: string, ...expected: string[]) => {
        for (const e of expected) assert.ok(body(language, fn, label).includes(e), `${fn} / ${label} should show ${e}`);
      };
      has('askAmount', '07 number', SHOWN_PHONE);
      has('askAmount', '01 number', '0112 345 678');
      has('invalidAmount', 'amount_too_large', '*KES 250,000*');
      has('invalidAmount', 'amount_too_small', '*KES 1*');
      has('confirm', 'ordinary', SHOWN_PHONE, '*KES 1,500*', DESCRIPTION);
      has('confirm', 'duplicate of 7', '*INV-0007*');
      has('confirm', 'extreme', '*INV-9999*', '*KES 250,000*', '0112 345 678', LONG_DESCRIPTION);
      has('invoiceCreated', 'ordinary', '*INV-0007*', '*KES 1,500*', SHOWN_PHONE);
      has('invoiceList', 'one', '*INV-0007*', '*KES 1,500*', SHOWN_PHONE);
      has('invoiceList', '10 lines', ...tenLines.map((l) => `INV-${String(l.number).padStart(4, '0')}`));
      has('invoiceDetail', 'unpaid, no attempts', '*INV-0007*', '*KES 1,500*', SHOWN_PHONE, DESCRIPTION);
      has('invoiceDetail', 'paid with receipt', 'QK12ABC3DE');
      has('invoiceNotFound', '7', 'INV-0007');
      has('reminderSent', 'sent', 'INV-0007', SHOWN_PHONE);
      has('invoiceUnreached', 'ordinary', '*INV-0007*', SHOWN_PHONE);
      has('invoiceUnreached', 'extreme', '*INV-99999*', '0112 345 678');
      has('cannotRemind', 'paid', 'INV-0007');
      has('invoiceCancelled', 'cancelled', 'INV-0007');
      has('cannotCancel', 'paid', 'INV-0007', 'M-PESA');
      has('summary', 'ordinary', '*KES 4,500*', '*KES 23,000*', '12', '9');
      has('summary', 'big', 'KES 2,500,000,000');
      has('invoiceToCustomer', 'ordinary', NAME, '*INV-0007*', '*KES 1,500*', DESCRIPTION, SHOWN_PHONE, 'M-PESA', 'PIN');
      has('invoiceToCustomer', 'extreme', LONG_NAME, LONG_DESCRIPTION, '*KES 250,000*');
      has('reminderToCustomer', 'ordinary', NAME, '*INV-0007*', '*KES 1,500*');
      has('invoiceCancelledToCustomer', 'ordinary', NAME, 'INV-0007');
      has('customerInvoices', 'one', NAME, '*INV-0007*', '*KES 1,500*', DESCRIPTION);
      has('customerPayPending', 'ordinary', NAME, '*INV-0007*', '*KES 1,500*', 'M-PESA');
      has('promptSent', 'ordinary', NAME, '*INV-0007*', '*KES 1,500*', DESCRIPTION, SHOWN_PHONE, 'M-PESA', 'PIN');
      has('promptSent', 'extreme', LONG_NAME, LONG_DESCRIPTION, '*INV-9999*', '*KES 250,000*', '0112 345 678');
      has('promptStillPending', 'ordinary', '*INV-0007*', '2');
      has('promptNotStarted', 'ordinary', '*INV-0007*', 'M-PESA');
      has('promptNotStarted', 'extreme', '*INV-99999*');
      has('alreadyPaid', 'ordinary', '*INV-0007*');
      has('receiptToCustomer', 'ordinary', NAME, '*INV-0007*', '*KES 1,500*', RECEIPT);
      has('receiptToCustomer', 'no receipt', NAME, '*INV-0007*', '*KES 1,500*', 'M-PESA');
      has('receiptToCustomer', 'extreme', LONG_NAME, '*KES 250,000*', 'NLJ7RT61SV');
      has('paidToMerchant', 'ordinary', '*INV-0007*', '*KES 1,500*', '0712 *** 678', RECEIPT);
      has('paidToMerchant', 'no receipt', '*INV-0007*', '*KES 1,500*', '0712 *** 678', 'M-PESA');
      has('paidToMerchant', 'was cancelled', '*INV-0007*', '*KES 1,500*', RECEIPT, language === 'en' ? 'cancelled' : 'umeighairi', language === 'en' ? 'refund' : 'mrudishie');
      has('paidToMerchant', '01 number', '0112 *** 678');
      has('paidToMerchant', 'extreme', '*INV-99999*', '*KES 250,000*', '0112 *** 678');
      has('paymentFailedToCustomer', 'ordinary', NAME, '*INV-0007*', '*KES 1,500*', 'M-PESA');
      has('paymentFailedToCustomer', 'extreme', LONG_NAME, '*INV-9999*', '*KES 250,000*');
      for (const reason of FAILURE_REASONS) has('paymentFailedToMerchant', reason, '*INV-0007*');
      has('paidTwiceToMerchant', 'ordinary', '*INV-0007*', '*KES 1,500*', RECEIPT, language === 'en' ? 'Refund' : 'Mrudishie');
      has('paidTwiceToMerchant', 'extreme', '*INV-99999*', '*KES 250,000*');
      has('paymentNeedsReview', 'ordinary', '*INV-0007*', '*KES 1,500*', '*KES 1,000*');
      has('paymentNeedsReview', 'extreme', '*INV-99999*', '*KES 250,000*', '*KES 1*');
      has('reminderDue', 'ordinary', NAME, '*INV-0007*', '*KES 1,500*');
      has('reminderDue', 'extreme', LONG_NAME, '*INV-9999*', '*KES 250,000*');
    });

    test('dates are Nairobi calendar days', () => {
      const expected = language === 'en' ? '29 Nov 2026' : '29 Novemba 2026';
      for (const fn of ['confirm', 'invoiceToCustomer', 'reminderToCustomer', 'customerPayPending', 'reminderDue'] as const) {
        const shown = body(language, fn, 'ordinary');
        assert.ok(shown.includes(expected), `${fn}: ${shown}`);
        assert.ok(!shown.includes('28 Nov'), `${fn} used UTC: ${shown}`);
      }
      assert.ok(body(language, 'invoiceDetail', 'unpaid, no attempts').includes(language === 'en' ? '22 Nov 2026' : '22 Novemba 2026'));
      // Attempt times are Nairobi wall-clock time: 06:05 UTC is 09:05.
      assert.ok(body(language, 'invoiceDetail', 'paid with receipt').includes('09:05'));
    });

    test('invoiceNotFound(7) is one text, whatever the reason, and does not say whose it is or whether it exists', () => {
      const t = texts[language];
      assert.deepEqual(t.invoiceNotFound(7), t.invoiceNotFound(7));
      assert.deepEqual(MessageContent.parse(t.invoiceNotFound(7)), t.invoiceNotFound(7));
      assert.doesNotMatch(bodyOf(t.invoiceNotFound(7)), /another|belong|exist|yours|mwingine|si yako|haipo|mali ya/i);
      assert.equal(bodyOf(t.invoiceNotFound(8)), bodyOf(t.invoiceNotFound(7)).replace('INV-0007', 'INV-0008'));
    });

    test('help lists every command, in both languages’ words', () => {
      const shown = body(language, 'help', 'help');
      for (const word of ['help', 'msaada', 'new', 'ankara', 'invoice', '0712345678 1500', 'list', 'status 7', 'remind 7', 'cancel 7', 'summary', 'language en', 'lugha sw', 'stop']) {
        assert.ok(shown.includes(word), `help lacks ${word}`);
      }
      assert.ok(/language en \| sw/.test(shown) && /lugha sw \| en/.test(shown), 'language en|sw / lugha sw|en');
    });

    test('the customer SMS is plain text, at most 160 characters, and says how to pay', () => {
      const reply = language === 'en' ? 'Reply PAY' : 'Jibu LIPA';
      for (const label of ['ordinary', 'long description', 'extreme']) {
        const sms = find(language, 'invoiceToCustomerSms', label);
        assert.equal(typeof sms, 'string');
        const s = bodyOf(sms);
        assert.ok(s.length <= 160, `${label}: ${s.length} characters: ${s}`);
        assert.ok(s.includes(reply), `${label}: ${s}`);
        assert.doesNotMatch(s, /pay:|\*|\n/, `${label}: ${s}`);
        assert.ok(s.includes(label === 'extreme' ? 'INV-9999' : 'INV-0007'), s);
        assert.ok(s.includes(label === 'extreme' ? 'KES 250,000' : 'KES 1,500'), s);
      }
      const ordinary = body(language, 'invoiceToCustomerSms', 'ordinary');
      assert.ok(ordinary.includes(NAME) && ordinary.includes(DESCRIPTION) && ordinary.includes('29 Nov'), ordinary);
      assert.match(ordinary, /^[\x20-\x7E]+$/, 'ordinary SMS stays in the GSM alphabet');
      // The description is cut before the business name.
      assert.ok(body(language, 'invoiceToCustomerSms', 'long description').includes(NAME));
    });

    test('customer-facing WhatsApp messages are plain ASCII around the merchant’s words (cheap SMS fallback)', () => {
      const fns = [
        'invoiceToCustomer',
        'reminderToCustomer',
        'invoiceCancelledToCustomer',
        'customerInvoices',
        'customerPayPending',
        'promptSent',
        'promptStillPending',
        'promptNotStarted',
        'alreadyPaid',
        'receiptToCustomer',
        'paymentFailedToCustomer',
        'reminderDue',
      ] as const;
      for (const fn of fns) {
        for (const c of allCases(language).filter((x) => x.fn === fn && !x.label.includes('extreme'))) {
          assert.match(bodyOf(c.out), /^[\x20-\x7E\n]+$/, `${fn} / ${c.label}: ${bodyOf(c.out)}`);
        }
      }
    });

    test('customerInvoices: nothing to pay, one with its pay button, several as a list of at most 10 unique rows', () => {
      const none = find(language, 'customerInvoices', 'none');
      assert.ok(typeof none !== 'string' && none.type === 'text');
      const one = find(language, 'customerInvoices', 'one');
      assert.ok(typeof one !== 'string' && one.type === 'buttons');
      for (const label of ['two', 'ten, extreme', 'twelve: the first ten', 'two merchants, same number']) {
        const list = find(language, 'customerInvoices', label);
        assert.ok(typeof list !== 'string' && list.type === 'list', label);
        assert.equal(list.button, language === 'en' ? 'Choose invoice' : 'Chagua ankara');
        for (const row of list.sections.flatMap((s) => s.rows)) {
          assert.match(row.title, /^INV-\d{4} - KES [\d,]+$/);
          assert.ok(row.title.length <= 24 && (row.description ?? '').length <= 72);
        }
      }
      assert.ok(body(language, 'customerInvoices', 'twelve: the first ten').includes('12'));
    });

    test('invoiceList: empty offers New invoice; 10 extreme lines fit; statuses are words, overdue shown', () => {
      const empty = find(language, 'invoiceList', 'empty');
      assert.ok(typeof empty !== 'string' && empty.type === 'buttons');
      const ten = body(language, 'invoiceList', '10 extreme lines');
      assert.ok(ten.length <= 1024, `${ten.length}`);
      assert.equal(ten.split('\n').filter((l) => l.includes('INV-')).length, 10);
      const words = body(language, 'invoiceList', '10 lines');
      assert.ok(words.includes(language === 'en' ? 'Overdue' : 'Imechelewa'));
      assert.ok(words.includes(language === 'en' ? 'Paid' : 'Imelipwa'));
      assert.doesNotMatch(words, /· (pending|sent|paid|failed|cancelled)$/m, 'a raw status leaked');
    });

    test('invoiceDetail shows at most the last 5 attempts and says how many were left out', () => {
      const shown = body(language, 'invoiceDetail', 'extreme: overdue, long description, 30 attempts, no due date');
      assert.equal(shown.split('\n').filter((l) => l.startsWith('• ')).length, 5);
      assert.ok(shown.includes('25'));
      assert.ok(body(language, 'invoiceDetail', 'overdue').includes(language === 'en' ? '(overdue)' : '(imechelewa)'));
    });

    test('the payment SMS are plain text, at most 160 characters, and say what happened (and how to pay)', () => {
      const reply = language === 'en' ? 'Reply PAY' : 'Jibu LIPA';
      const sms: Array<{ fn: keyof Texts; labels: string[]; says: readonly string[] }> = [
        { fn: 'receiptToCustomerSms', labels: ['ordinary', 'no receipt', 'extreme'], says: ['M-PESA'] },
        { fn: 'paymentFailedToCustomerSms', labels: ['ordinary', 'extreme', 'unconfirmed'], says: [reply] },
        { fn: 'reminderDueSms', labels: ['ordinary', 'today', 'extreme'], says: [reply, '29 Nov 2026'] },
      ];
      for (const { fn, labels, says } of sms) {
        for (const label of labels) {
          const out = find(language, fn, label);
          assert.equal(typeof out, 'string', `${fn} / ${label}`);
          const s = bodyOf(out);
          const where = `${fn} / ${label}: ${s}`;
          assert.ok(s.length <= 160, `${s.length} characters: ${where}`);
          assert.equal(s, s.trim(), where);
          assert.doesNotMatch(s, /pay:|\*|\n/, where);
          for (const e of [...says, label === 'extreme' ? 'INV-9999' : 'INV-0007', label === 'extreme' ? 'KES 250,000' : 'KES 1,500']) {
            assert.ok(s.includes(e), `${where} should say ${e}`);
          }
          if (label !== 'extreme') {
            assert.ok(s.includes(NAME), where);
            assert.match(s, /^[\x20-\x7E]+$/, `stays in the GSM alphabet: ${where}`);
          }
        }
      }
      assert.ok(body(language, 'receiptToCustomerSms', 'ordinary').includes(RECEIPT));
      assert.doesNotMatch(body(language, 'receiptToCustomerSms', 'no receipt'), /null|undefined/);
      const [tomorrow, today] = language === 'en' ? ['tomorrow', 'today'] : ['kesho', 'leo'];
      assert.ok(body(language, 'reminderDueSms', 'ordinary').includes(tomorrow));
      assert.ok(body(language, 'reminderDueSms', 'today').includes(today));
      assert.ok(!body(language, 'reminderDueSms', 'ordinary').includes('28 Nov'), 'the SMS due date is a Nairobi day, not UTC');
    });

    test('paidToMerchant masks the payer’s number, whatever form it comes in', () => {
      for (const c of allCases(language).filter((x) => x.fn === 'paidToMerchant')) {
        const shown = bodyOf(c.out);
        const digits = shown.replace(/\D/g, '');
        const where = `${c.label}: ${shown}`;
        assert.ok(!shown.includes(SHOWN_PHONE) && !shown.includes('0112 345 678'), `full number in ${where}`);
        assert.ok(!digits.includes('712345678') && !digits.includes('112345678'), `full number in ${where}`);
        assert.ok(!digits.includes('7911123456') && !digits.includes('7911 123'), `full number in ${where}`);
        assert.doesNotMatch(shown, /null|undefined/, where);
      }
      for (const p of PAYER_FORMS) assert.ok(body(language, 'paidToMerchant', `payer ${p}`).includes('0712 *** 678'), p);
      assert.ok(body(language, 'paidToMerchant', 'payer in an unknown format').includes('*** 456'));
      // The mask's asterisks sit on a line of their own, away from the bold markers.
      const maskLine = body(language, 'paidToMerchant', 'ordinary').split('\n').find((l) => l.includes('***'));
      assert.ok(maskLine !== undefined && (maskLine.match(/\*/g) ?? []).length === 3, maskLine);
    });

    test('paymentFailedToMerchant: every PaymentFailureReason gives its own words', () => {
      const bodies = FAILURE_REASONS.map((reason) => body(language, 'paymentFailedToMerchant', reason));
      assert.equal(new Set(bodies).size, FAILURE_REASONS.length, bodies.join('\n---\n'));
      const expected: Record<Language, Record<PaymentFailureReason, RegExp>> = {
        en: {
          cancelled: /cancelled/,
          unreachable: /off or out of reach/,
          wrong_pin: /wrong M-PESA PIN/,
          insufficient_funds: /enough money/,
          limit: /limit/,
          expired: /expired/,
          no_answer: /never told me/,
          other: /did not complete/,
        },
        sw: {
          cancelled: /alighairi/,
          unreachable: /imezimwa au haipatikani/,
          wrong_pin: /PIN ya M-PESA isiyo sahihi/,
          insufficient_funds: /pesa za kutosha/,
          limit: /vikomo/,
          expired: /muda wa ombi/,
          no_answer: /haikunijulisha/,
          other: /haikukamilisha/,
        },
      };
      FAILURE_REASONS.forEach((reason, i) => assert.match(bodies[i]!, expected[language][reason], reason));
      // The merchant is told what to do next: the customer can retry, or a reminder sends a new prompt.
      assert.ok(body(language, 'paymentFailedToMerchant', 'cancelled').includes(language === 'en' ? 'remind 7' : 'kumbusha 7'));
    });

    test('the refusals by SMS fit one SMS and point to WhatsApp', () => {
      for (const fn of ['merchantOnWhatsApp', 'registerOnWhatsApp'] as const) {
        const shown = body(language, fn, 'by SMS');
        assert.ok(shown.length <= 160, `${fn}: ${shown.length} characters`);
        assert.match(shown, /WhatsApp/);
      }
      assert.match(body(language, 'registerOnWhatsApp', 'by SMS'), language === 'en' ? /reply PAY/ : /jibu LIPA/);
    });

    test('a failure M-PESA\'s status query reported: the customer is told not to pay again if M-PESA confirmed it, the merchant to check the statement', () => {
      const [notAgain, statement] = language === 'en' ? [/do not pay again/, /check your M-PESA statement/] : [/usilipe tena/, /taarifa yako ya M-PESA/];
      const smsNotAgain = language === 'en' ? /unless M-PESA already confirmed it/ : /isipokuwa M-PESA imekwisha/;
      assert.match(body(language, 'paymentFailedToCustomer', 'unconfirmed'), notAgain);
      assert.doesNotMatch(body(language, 'paymentFailedToCustomer', 'ordinary'), notAgain);
      assert.match(body(language, 'paymentFailedToCustomerSms', 'unconfirmed'), smsNotAgain);
      assert.doesNotMatch(body(language, 'paymentFailedToCustomerSms', 'ordinary'), smsNotAgain);
      assert.ok(body(language, 'paymentFailedToCustomerSms', 'unconfirmed extreme').length <= 160);
      assert.match(body(language, 'paymentFailedToMerchant', 'unconfirmed'), statement);
      assert.doesNotMatch(body(language, 'paymentFailedToMerchant', 'cancelled'), statement);
    });

    test('payment messages to the customer: what happened, and the way to pay again', () => {
      const [reply, payNow] = language === 'en' ? ['reply PAY', 'Pay now'] : ['jibu LIPA', 'Lipa sasa'];
      assert.ok(body(language, 'paymentFailedToCustomer', 'ordinary').includes(reply));
      assert.ok(body(language, 'paymentFailedToCustomer', 'ordinary').includes(payNow));
      assert.ok(body(language, 'promptNotStarted', 'ordinary').includes(reply));
      assert.ok(body(language, 'promptStillPending', 'ordinary').includes(reply));
      assert.ok(body(language, 'promptSent', 'ordinary').includes(language === 'en' ? 'Reply PAY' : 'Jibu LIPA'));
      for (const label of ['no receipt', 'blank receipt']) {
        const shown = body(language, 'receiptToCustomer', label);
        assert.doesNotMatch(shown, /null|undefined|receipt: *$|Risiti ya M-PESA: *$/m, shown);
      }
      const extreme = body(language, 'receiptToCustomer', 'extreme');
      assert.ok(!extreme.includes('Z'.repeat(40)), 'an odd receipt is cut');
      assert.notEqual(body(language, 'reminderDue', 'ordinary'), body(language, 'reminderDue', 'today'));
      assert.ok(body(language, 'reminderDue', 'ordinary').includes(language === 'en' ? 'tomorrow' : 'kesho'));
      assert.ok(body(language, 'reminderDue', 'today').includes(language === 'en' ? 'today' : 'leo'));
      for (const fn of ['paymentNeedsReview', 'paidTwiceToMerchant'] as const) {
        assert.ok(body(language, fn, 'ordinary').includes(language === 'en' ? 'status 7' : 'hali 7'));
      }
    });

    test('a payment whose amount M-PESA did not give is said as unknown, never as KES 0', () => {
      for (const label of ['amount unknown', 'amount unknown, already paid']) {
        const shown = body(language, 'paymentNeedsReview', label);
        assert.doesNotMatch(shown, /KES 0\b|null|undefined|NaN/, shown);
        assert.match(shown, language === 'en' ? /M-PESA did not say how much was paid/ : /M-PESA haikutaja kiasi kilicholipwa/, shown);
        assert.match(shown, language === 'en' ? /settle any difference/ : /tofauti yoyote/, shown);
        assert.ok(shown.includes(language === 'en' ? 'status ' : 'hali '), shown);
      }
      assert.ok(body(language, 'paymentNeedsReview', 'amount unknown').includes('*KES 1,500*'), 'the amount asked is still shown');
      assert.match(body(language, 'paymentNeedsReview', 'amount unknown, already paid'), language === 'en' ? /stays marked paid/ : /inabaki kama imelipwa/);
    });

    test('invoiceUnreached tells the merchant the invoice reached nobody on either channel, and what to do next', () => {
      const shown = body(language, 'invoiceUnreached', 'ordinary');
      const out = find(language, 'invoiceUnreached', 'ordinary');
      assert.ok(typeof out !== 'string' && out.type === 'text', 'plain text: it may well go by SMS');
      assert.ok(shown.length <= 320, `short enough for a notice that may go by SMS: ${shown.length}`);
      for (const e of ['WhatsApp', 'SMS', language === 'en' ? 'status 7' : 'hali 7', language === 'en' ? 'new invoice' : 'ankara mpya']) {
        assert.ok(shown.includes(e), `${shown} should say ${e}`);
      }
      assert.doesNotMatch(shown, language === 'en' ? /paid|payment/i : /lipa|malipo/i, 'about reaching the customer, not about paying');
    });

    test('messages are deterministic (pure): the same facts give the same message', () => {
      assert.deepEqual(buildCases(language), buildCases(language));
    });
  });
}

test('nothing is left untranslated: every sw message differs from its en message', () => {
  const en = allCases('en');
  const sw = allCases('sw');
  assert.equal(sw.length, en.length);
  en.forEach((e, i) => {
    const s = sw[i]!;
    assert.equal(`${s.fn}/${s.label}`, `${e.fn}/${e.label}`);
    assert.notEqual(bodyOf(s.out), bodyOf(e.out), `${e.fn} / ${e.label}: same body in en and sw`);
    assert.notDeepEqual(s.out, e.out, `${e.fn} / ${e.label}`);
  });
});

test('no English phrases in sw messages, no Swahili phrases in en messages (except the bilingual ones)', () => {
  const bilingual = new Set<keyof Texts>(['askBusinessName', 'askLanguage', 'help']);
  const english = /\b(please|tap|your|you|the|invoice|send|cancel|amount|customer|reply|due)\b/i;
  const swahili = /\b(ankara|tafadhali|bonyeza|mteja|kiasi|lipa|tuma|ghairi|kwa|ya|na)\b/i;
  // The fixtures' own words (business names, descriptions, M-PESA result texts) are not ours to translate.
  const strip = (s: string) =>
    [NAME, LONG_NAME, DESCRIPTION, LONG_DESCRIPTION, 'Otieno Hardware', 'The service request is processed successfully.']
      .reduce((acc, w) => acc.split(w).join(''), s)
      .replace(/The balance is insufficient[^\n]*/g, '');
  for (const c of allCases('sw')) {
    if (bilingual.has(c.fn)) continue;
    assert.doesNotMatch(strip(bodyOf(c.out)), english, `sw ${c.fn} / ${c.label}: ${bodyOf(c.out)}`);
  }
  for (const c of allCases('en')) {
    if (bilingual.has(c.fn)) continue;
    assert.doesNotMatch(strip(bodyOf(c.out)), swahili, `en ${c.fn} / ${c.label}: ${bodyOf(c.out)}`);
  }
});

test('random names, descriptions, amounts, numbers and dates always fit WhatsApp’s limits (fast-check)', () => {
  const name = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 60 });
  const description = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 100 });
  const amount = fc.integer({ min: 1, max: MAX });
  const number = fc.integer({ min: 1, max: 9999 });
  const date = fc.date({ min: new Date('2020-01-01T00:00:00Z'), max: new Date('2040-12-31T23:59:59Z'), noInvalidDate: true });
  const msisdn = fc.tuple(fc.constantFrom('7', '1'), fc.integer({ min: 0, max: 99_999_999 })).map(([p, n]) => `254${p}${String(n).padStart(8, '0')}`);
  const invoice = fc.record({ merchantName: name, number, amount, description, dueDate: fc.option(date, { nil: null }) });
  fc.assert(
    fc.property(
      fc.constantFrom(...languages),
      name,
      description,
      amount,
      number,
      date,
      msisdn,
      fc.array(invoice, { maxLength: 14 }),
      (language, n, d, a, num, dt, p, invoices) => {
        const t = texts[language];
        const outputs: MessageContent[] = [
          t.registered(n),
          t.askAmount(p),
          t.confirm({ customerPhone: p, amount: a, description: d }, dt, num),
          t.invoiceCreated(num, p, a),
          t.invoiceUnreached(num, p),
          t.invoiceList(Array.from({ length: 10 }, (_, i) => line(num, { amount: a, customerPhone: p, status: i % 2 ? d : 'sent' }))),
          t.invoiceDetail(detail({ number: num, amount: a, description: d, customerPhone: p, dueDate: dt, paidAt: dt, mpesaReceipt: d, attempts: [{ at: dt, status: d, resultDesc: d }] })),
          t.invoiceToCustomer(n, num, a, d, dt, p),
          t.invoiceCancelledToCustomer(n, num),
          t.reminderToCustomer(n, num, a, dt),
          t.customerInvoices(invoices),
          ...invoices.slice(0, 1).map((i) => t.customerPayPending(i)),
          ...invoices.slice(0, 1).map((i) => t.promptSent(i, p)),
          t.promptStillPending(num),
          t.promptNotStarted(num),
          t.alreadyPaid(num),
          t.receiptToCustomer(n, num, a, d),
          t.receiptToCustomer(n, num, a, null),
          t.paidToMerchant(num, a, p, d),
          t.paymentFailedToCustomer(n, num, a),
          ...FAILURE_REASONS.map((r) => t.paymentFailedToMerchant(num, r)),
          t.paymentNeedsReview(num, a, a + 1),
          t.reminderDue(n, num, a, dt, 'tomorrow'),
          t.reminderDue(n, num, a, dt, 'today'),
        ];
        for (const out of outputs) {
          const parsed = MessageContent.safeParse(out);
          if (!parsed.success) throw new Error(`${parsed.error.message}\n${JSON.stringify(out)}`);
        }
        const sms = t.invoiceToCustomerSms(n, num, a, d, dt);
        assert.ok(sms.includes(language === 'en' ? 'Reply PAY' : 'Jibu LIPA'));
        assert.ok(sms.includes(`INV-${String(num).padStart(4, '0')}`));
        const number = `INV-${String(num).padStart(4, '0')}`;
        for (const s of [t.paymentFailedToCustomerSms(n, num, a), t.reminderDueSms(n, num, a, dt, 'today')]) {
          assert.ok(s.includes(language === 'en' ? 'Reply PAY' : 'Jibu LIPA'), s);
          assert.ok(s.includes(number), s);
        }
        assert.ok(t.receiptToCustomerSms(n, num, a, 'NLJ7RT61SV').includes(number));
        // Ordinary names (plain words, up to 30 characters) always fit one SMS.
        const plain = n.replace(/[^A-Za-z ]/g, '').trim().slice(0, 30) || 'Shop';
        for (const s of [
          t.receiptToCustomerSms(plain, num, a, 'NLJ7RT61SV'),
          t.paymentFailedToCustomerSms(plain, num, a),
          t.reminderDueSms(plain, num, a, dt, 'tomorrow'),
        ]) {
          assert.ok(s.length <= 160, `${s.length}: ${s}`);
        }
        // The payer's full number never reaches the merchant.
        const paid = t.paidToMerchant(num, a, p, null).body;
        assert.ok(!paid.replace(/\D/g, '').includes(p.slice(3)), paid);
        assert.ok(paid.includes(`0${p.slice(3, 6)} *** ${p.slice(-3)}`), paid);
      },
    ),
    { numRuns: 300 },
  );
});

test("a failed invoice reads as not delivered (it reached the customer on no channel), not as a failed payment", () => {
  const en = texts.en.invoiceDetail(detail({ status: 'failed' }));
  const sw = texts.sw.invoiceDetail(detail({ status: 'failed' }));
  assert.ok(en.type === 'text' || en.type === 'buttons');
  assert.match(JSON.stringify(en), /Not delivered/);
  assert.doesNotMatch(JSON.stringify(en), /Payment failed/);
  assert.match(JSON.stringify(sw), /Haikumfikia mteja/);
});

test('templateName: at most 60 characters, never half an emoji, the service name when empty', () => {
  const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
  for (const name of ['A' + '🙂'.repeat(30), '🙂'.repeat(40), 'Mama Mboga 👩🏽‍🌾'.repeat(5), 'x'.repeat(100)]) {
    const out = templateName(name);
    assert.ok(out.length <= 60 && out.length >= 55, `${out.length}: ${out}`);
    assert.doesNotMatch(out, loneSurrogate, out);
    assert.ok(name.trim().startsWith(out));
  }
  assert.equal(templateName('Duka la Mama'), 'Duka la Mama');
  assert.equal(templateName('   '), 'InvoiceIQ');
  assert.equal(templateName(''), 'InvoiceIQ');
});

describe('reminderSent says whether a new prompt went with the reminder', () => {
  for (const language of languages) {
    test(`${language}: 'pending' (an earlier prompt may still be on the phone) does not claim a new prompt; the default does`, () => {
      const t = texts[language];
      const newPrompt = language === 'en' ? 'with a new M-PESA prompt' : 'kumtumia ombi jipya la M-PESA';
      assert.deepEqual(t.reminderSent(7, PHONE), t.reminderSent(7, PHONE, 'new'));
      assert.ok(bodyOf(t.reminderSent(7, PHONE)).includes(newPrompt));
      const pending = bodyOf(t.reminderSent(7, PHONE, 'pending'));
      assert.ok(!pending.includes(newPrompt), pending);
      for (const shown of ['*INV-0007*', SHOWN_PHONE, 'M-PESA', 'PIN', language === 'en' ? '2 minutes' : 'dakika 2', language === 'en' ? 'Pay now' : 'Lipa sasa']) {
        assert.ok(pending.includes(shown), `${shown} in ${pending}`);
      }
    });
  }
});

describe("a Pay button given the invoice's id names that invoice", () => {
  const ID = '1A2B3C4D-0000-4000-8000-00000000abcd';
  const TAGGED = 'pay:INV-0007~1a2b3c4d';
  const customerContext = { now: CREATED, language: 'en' as const, isMerchant: false, isCustomer: true, recentInvoices: [], maxAmount: MAX };

  test('payButtonId: the number alone without an id; with one, ~ and its first 8 hex digits (lower case), far inside 256 and 200 characters', () => {
    assert.equal(payButtonId(7), 'pay:INV-0007');
    assert.equal(payButtonId(7, ID), TAGGED);
    assert.equal(payButtonId(99999, 'ffffffff-ffff-4fff-bfff-ffffffffffff'), 'pay:INV-99999~ffffffff');
    assert.ok(payButtonId(99_999_999, ID).length <= 200);
  });

  for (const language of languages) {
    test(`${language}: every message with a Pay button carries the tag, parses (WhatsApp's limits), and the conversation reads the tap as that invoice`, () => {
      const t = texts[language];
      const tagged: Array<[string, MessageContent]> = [
        ['invoiceToCustomer', t.invoiceToCustomer(NAME, 7, 1500, DESCRIPTION, DUE, PHONE, ID)],
        ['reminderToCustomer', t.reminderToCustomer(NAME, 7, 1500, DUE, ID)],
        ['customerInvoices, one', t.customerInvoices([customerInvoice(7, { id: ID })])],
        ['promptNotStarted', t.promptNotStarted(7, 'refused', ID)],
        ['promptNotStarted, unclear', t.promptNotStarted(7, 'unclear', ID)],
        ['paymentFailedToCustomer', t.paymentFailedToCustomer(NAME, 7, 1500, undefined, ID)],
        ['paymentFailedToCustomer, unconfirmed', t.paymentFailedToCustomer(NAME, 7, 1500, { fromQuery: true }, ID)],
        ['reminderDue', t.reminderDue(NAME, 7, 1500, DUE, 'today', ID)],
      ];
      for (const [label, out] of tagged) {
        const parsed = MessageContent.safeParse(out);
        assert.ok(parsed.success, `${label}: ${parsed.success ? '' : parsed.error.message}`);
        assert.deepEqual(idsOf(out), [TAGGED], label);
        assert.ok(out.type === 'buttons' && out.buttons[0]!.title === contractTitles[language].pay, label);
      }
      const { effects } = converse(IDLE, { kind: 'button', id: TAGGED, title: 'Pay now' }, { ...customerContext, language });
      assert.deepEqual(effects, [{ type: 'customer_pay', number: 7, tag: '1a2b3c4d' }]);
      // The same texts without an id: the number alone, as before the tag.
      assert.deepEqual(idsOf(t.promptNotStarted(7, 'refused')), ['pay:INV-0007']);
    });
  }
});
