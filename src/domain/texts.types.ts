/**
 * Every message the bot says, as functions of their facts, in each language. The
 * implementations (`src/domain/texts.ts`) are pure and respect WhatsApp's limits
 * (body <= 1024, <= 3 buttons with unique titles <= 20 chars, list rows <= 10, row title <= 24).
 * Money is passed as whole shillings and formatted inside (`KES 1,500`); phones as stored
 * (`2547XXXXXXXX`) and shown as `0712 345 678`; invoice numbers as integers, shown `INV-0007`.
 */
import type { MessageContent } from './outbound.js';
import type { Language } from './conversation/types.js';

export type InvoiceLine = { number: number; customerPhone: string; amount: number; status: string; overdue: boolean };
export type InvoiceDetail = InvoiceLine & {
  description: string;
  createdAt: Date;
  dueDate: Date | null;
  paidAt: Date | null;
  mpesaReceipt: string | null;
  attempts: Array<{ at: Date; status: string; resultDesc: string | null }>;
};
export type MerchantSummary = { sent: number; paid: number; outstandingAmount: number; collectedThisMonth: number; overdue: number };
/** `id`: the invoice's id; a list of invoices that share a number tells them apart by it. */
export type CustomerInvoice = { merchantName: string; number: number; amount: number; description: string; dueDate: Date | null; id?: string };

/**
 * `fromQuery`: the failure was learnt from M-PESA's status query (reconciliation), not from the
 * payment's own callback. The query has been reported to say failed for payments that went
 * through (PROVIDERS.md), so the customer is told not to pay again if M-PESA confirmed it to
 * them, and the merchant to check their statement before asking for the money again.
 */
export type Unconfirmed = { fromQuery: boolean };

/**
 * PayButton: every message with a Pay button takes the invoice's id last (`invoiceId`), and its
 * button is `pay:INV-0007~<first 8 hex digits of the id>` (payButtonId in texts.ts): merchants
 * share invoice numbers, so a tap on an old message must name exactly its own invoice. Given no
 * id, the button carries the number alone (as buttons sent before the tag did).
 */
export type Texts = {
  // onboarding
  askBusinessName(): MessageContent; // first contact: welcome + "what is your business called?"
  businessNameInvalid(): MessageContent; // empty or longer than 60 characters
  registered(businessName: string): MessageContent; // welcome aboard + the menu buttons
  // menu and help
  menu(): MessageContent; // buttons: new_invoice "New invoice", list "My invoices", help "Help" (titles translated)
  help(): MessageContent; // every command with an example, short; buttons as menu
  unknownCommand(): MessageContent; // short hint + menu buttons
  onlyTextAndButtons(): MessageContent; // media, stickers, locations, reactions...
  staleButton(): MessageContent; // a button from an old message that means nothing now
  stateReset(): MessageContent; // apology: the stored conversation could not be read, back to the menu (menu buttons)
  // by SMS (the sender's number is only the network's word): a merchant's business changes on WhatsApp only
  merchantOnWhatsApp(): MessageContent; // invoices are created, reminded and cancelled on WhatsApp only; by SMS: list, status, summary, PAY
  registerOnWhatsApp(): MessageContent; // a business is registered on WhatsApp, not by SMS; PAY still works for invoices
  // guided flow
  askCustomer(): MessageContent; // "customer's phone? e.g. 0712 345 678" (+ "type cancel to stop")
  invalidPhone(): MessageContent; // "That doesn't look like a Kenyan mobile number. Try 0712 345 678."
  askAmount(customerPhone: string): MessageContent;
  invalidAmount(reason: 'invalid_amount' | 'decimal_amount' | 'amount_too_small' | 'amount_too_large', max: number): MessageContent;
  askDescription(): MessageContent;
  invalidDescription(reason: 'description_empty' | 'description_too_long'): MessageContent; // states the 100-character limit
  confirm(draft: { customerPhone: string; amount: number; description: string }, dueDate: Date, duplicateOf: number | null): MessageContent; // buttons: confirm_send "Send", cancel_draft "Cancel"; mentions the duplicate INV number when set
  confirmHint(): MessageContent; // inside confirmation, anything but yes/no: "tap Send or Cancel (or type yes / no)" with the same buttons
  draftCancelled(): MessageContent; // + menu buttons
  draftExpired(): MessageContent; // "your draft expired after 30 minutes" (then the message is handled from the menu)
  nothingToCancel(): MessageContent;
  // commands with an invoice reference
  invalidInvoiceNumber(command: 'status' | 'remind' | 'cancel'): MessageContent; // e.g. "Try: status 7 or status INV-0007"
  askLanguage(): MessageContent; // buttons: lang:en "English", lang:sw "Kiswahili"
  languageSet(): MessageContent; // in the new language
  // results of shell effects (merchant side)
  invoiceCreated(number: number, customerPhone: string, amount: number): MessageContent; // "INV-0007 created and sent to 0712 345 678"
  invoiceList(lines: readonly InvoiceLine[]): MessageContent; // latest 10; empty -> "no invoices yet" + new_invoice button
  invoiceDetail(detail: InvoiceDetail): MessageContent;
  invoiceNotFound(number: number): MessageContent; // identical for "not yours" and "does not exist"
  /**
   * `prompt`: 'new' (default): a new M-PESA prompt went with the reminder; 'pending': none did, as an
   * earlier prompt (under 2 minutes old, or one whose push got no clear answer) may still be on the
   * customer's phone: the merchant is not told of a prompt that was never sent.
   */
  reminderSent(number: number, customerPhone: string, prompt?: 'new' | 'pending'): MessageContent;
  invoiceUnreachedSms(number: number, customerPhone: string): string; // the same by SMS: plain GSM text, <= 160 chars
  invoiceUnreached(number: number, customerPhone: string): MessageContent; // the invoice reached the customer on neither WhatsApp nor SMS: check the number; "status 7" to see it, or make a new invoice with the right number
  cannotRemind(number: number, status: 'paid' | 'cancelled'): MessageContent;
  invoiceCancelled(number: number): MessageContent;
  cannotCancel(number: number, status: 'paid' | 'cancelled'): MessageContent; // paid: "it is paid; refunds go through M-PESA" ; cancelled: already
  summary(summary: MerchantSummary): MessageContent;
  // customer side
  invoiceToCustomer(merchantName: string, number: number, amount: number, description: string, dueDate: Date, customerPhone: string, invoiceId?: string): MessageContent; // button pay:INV-0007~<id8> "Pay now" (PayButton); "You will get an M-PESA prompt on 0712 345 678. Enter your PIN to pay."
  invoiceToCustomerSms(merchantName: string, number: number, amount: number, description: string, dueDate: Date): string; // <= 160 chars where possible, says "reply PAY"
  invoiceCancelledToCustomer(merchantName: string, number: number): MessageContent;
  reminderToCustomer(merchantName: string, number: number, amount: number, dueDate: Date, invoiceId?: string): MessageContent; // with the pay button
  customerInvoices(invoices: readonly CustomerInvoice[]): MessageContent; // several unpaid: a list (rows id pay:INV-0007, tagged ~<id8> where two share a number); one: its detail with the pay button (tagged with its id); none: "nothing to pay"
  customerPayPending(invoice: CustomerInvoice): MessageContent; // until payments land: the invoice details + "an M-PESA prompt will follow"
  // payments (M-PESA STK push)
  promptSent(invoice: CustomerInvoice, customerPhone: string): MessageContent; // "check your phone 0712 345 678 and enter your M-PESA PIN to pay INV-0007 (KES 1,500)"
  promptStillPending(number: number): MessageContent; // an earlier prompt for this invoice is under 2 minutes old: "check your phone, or try again in a couple of minutes"
  promptNotStarted(number: number, outcome?: 'refused' | 'unclear', invoiceId?: string): MessageContent; // 'refused' (default): M-PESA refused to start the prompt: "reply PAY in a minute to try again"; 'unclear': no answer came, the prompt may be on the phone: "enter your PIN if it came, else reply PAY in 2 minutes" (both with pay button pay:INV-0007)
  alreadyPaid(number: number): MessageContent;
  receiptToCustomer(merchantName: string, number: number, amount: number, receipt: string | null): MessageContent; // "Paid. M-PESA receipt NLJ7RT61SV. Thank you!" (receipt null: "confirmed by M-PESA")
  receiptToCustomerSms(merchantName: string, number: number, amount: number, receipt: string | null): string; // <= 160 chars
  paidToMerchant(number: number, amount: number, payerPhone: string, receipt: string | null, options?: { wasCancelled: boolean }): MessageContent; // payer's number MASKED like 0712 *** 678; wasCancelled: the merchant had cancelled it (the prompt was already on the phone): it is now paid; refund one if another invoice replaced it
  paymentFailedToCustomer(merchantName: string, number: number, amount: number, options?: Unconfirmed, invoiceId?: string): MessageContent; // "not completed; reply PAY to try again" + button pay:INV-0007 "Pay now"
  paymentFailedToCustomerSms(merchantName: string, number: number, amount: number, options?: Unconfirmed): string; // <= 160 chars, "reply PAY"
  paymentFailedToMerchant(number: number, reason: PaymentFailureReason, options?: Unconfirmed): MessageContent; // the reason in words
  paidTwiceToMerchant(number: number, amount: number, receipt: string | null): MessageContent; // to the merchant: a second payment came in for an invoice already paid; it stays paid; refund one (the receipt finds it)
  paymentNeedsReview(number: number, expected: number, received: number | null, options?: { alreadyPaid: boolean }): MessageContent; // to the merchant: amount paid differs, or unknown (received null: M-PESA did not say; never "KES 0"); not marked paid (alreadyPaid: the invoice stays paid as M-PESA confirmed before); recorded for review
  reminderDue(merchantName: string, number: number, amount: number, dueDate: Date, when: 'tomorrow' | 'today', invoiceId?: string): MessageContent; // with pay button
  reminderDueSms(merchantName: string, number: number, amount: number, dueDate: Date, when: 'tomorrow' | 'today'): string; // <= 160 chars, "reply PAY"
  // dashboard
  dashboardLink(url: string): MessageContent; // personal sign-in link, valid 15 minutes, single use; do not share it
  dashboardUnavailable(): MessageContent; // the dashboard is not set up on this server (no PUBLIC_BASE_URL)
};

/** Why an STK push did not end in a payment, in words the merchant understands. */
export type PaymentFailureReason = 'cancelled' | 'unreachable' | 'wrong_pin' | 'insufficient_funds' | 'limit' | 'expired' | 'no_answer' | 'other';

export type TextsByLanguage = Record<Language, Texts>;
