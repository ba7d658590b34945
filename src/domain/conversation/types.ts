/**
 * The conversation's data: versioned state (stored as JSON per phone number), the context a
 * transition needs (passed in: clock, facts about the number), and the effects it asks the
 * shell to carry out. Plain data only, so every state survives a JSON/structuredClone trip.
 */
import type { MessageContent } from '../outbound.js';

export type Language = 'en' | 'sw';

export const STATE_VERSION = 1;
/** A draft left this long without a message expires. */
export const DRAFT_TTL_MS = 30 * 60 * 1000;
/** Duplicate guard window: same customer and amount, unpaid, sent this recently. */
export const DUPLICATE_WINDOW_MS = 10 * 60 * 1000;

export type Draft = { customerPhone?: string; amount?: number; description?: string };
export type CompleteDraft = { customerPhone: string; amount: number; description: string };

export type ConversationState =
  | { version: 1; step: 'idle' }
  /**
   * `askedAt`: when the question was last asked or answered; it expires as a draft does. A row
   * stored before it existed has none and counts as expired.
   */
  | { version: 1; step: 'awaiting_business_name'; askedAt?: string }
  | { version: 1; step: 'awaiting_customer'; draft: Draft; touchedAt: string }
  | { version: 1; step: 'awaiting_amount'; draft: Draft & { customerPhone: string }; touchedAt: string }
  | { version: 1; step: 'awaiting_description'; draft: Draft & { customerPhone: string; amount: number }; touchedAt: string }
  | {
      version: 1;
      step: 'awaiting_confirmation';
      draft: CompleteDraft;
      /** Number of a recent identical unpaid invoice, when the duplicate guard fired. */
      duplicateOf: number | null;
      touchedAt: string;
    };

export type Step = ConversationState['step'];
export const steps: readonly Step[] = [
  'idle',
  'awaiting_business_name',
  'awaiting_customer',
  'awaiting_amount',
  'awaiting_description',
  'awaiting_confirmation',
];

/** An inbound message as the machine sees it. */
export type MachineInput =
  | { kind: 'text'; text: string }
  | { kind: 'button'; id: string; title: string }
  | { kind: 'list'; id: string; title: string }
  | { kind: 'other'; type: string };

export type RecentInvoice = { number: number; customerPhone: string; amount: number; status: 'pending' | 'sent' | 'paid' | 'failed' | 'cancelled'; createdAt: Date };

export type MachineContext = {
  now: Date;
  language: Language;
  /** A merchant row exists for this number with a business name. */
  isMerchant: boolean;
  /** This number has unpaid invoices addressed to it (it is somebody's customer). */
  isCustomer: boolean;
  /** The merchant's invoices created in the last DUPLICATE_WINDOW_MS (duplicate guard). */
  recentInvoices: readonly RecentInvoice[];
  maxAmount: number;
  /** Days from sending to the due date (default INVOICE_DUE_DAYS, 7). */
  dueDays?: number;
  /**
   * How the message came (default whatsapp). By SMS the sender's number is only the mobile
   * network's word, not Meta's verified one: the turn may pay, read and answer, but not change
   * a merchant's business (see `converse`).
   */
  channel?: 'whatsapp' | 'sms';
};

/** What the shell carries out, in order, inside the same transaction. */
export type Effect =
  | { type: 'reply'; message: MessageContent }
  | { type: 'register_merchant'; businessName: string }
  | { type: 'create_invoice'; draft: CompleteDraft }
  | { type: 'list_invoices' }
  | { type: 'show_invoice'; number: number }
  | { type: 'remind_invoice'; number: number }
  | { type: 'cancel_invoice'; number: number }
  | { type: 'show_summary' }
  | { type: 'set_language'; language: Language }
  /** `tag`: the first 8 hex digits of the invoice's id, when its number alone names several. */
  | { type: 'customer_pay'; number: number | null; tag?: string }
  | { type: 'customer_help' }
  | { type: 'dashboard_link' };

export type Transition = { state: ConversationState; effects: Effect[] };
