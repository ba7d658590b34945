/**
 * The Kysely `Database` interface: one row type per table, as the migrations left them.
 * bigint columns come back from pg as strings; money columns are converted at the
 * repository edge, never passed around as strings.
 */
import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
/** int8 in, string out (pg does not parse int8 to avoid precision loss). */
type Money = ColumnType<string, number | bigint | string, number | bigint | string>;
type Json = ColumnType<unknown, string, string>;

export type Language = 'en' | 'sw';
export type InvoiceStatus = 'pending' | 'sent' | 'paid' | 'failed' | 'cancelled';
export type PaymentAttemptStatus = 'pending' | 'succeeded' | 'failed' | 'expired';
export type InboundSource = 'whatsapp_message' | 'whatsapp_status' | 'whatsapp_payload' | 'mpesa_callback' | 'sms_report' | 'sms_message';
export type InboundStatus = 'received' | 'processed' | 'rejected' | 'retrying' | 'dead';
export type Channel = 'whatsapp' | 'sms';
export type OutboundStatus = 'queued' | 'sending' | 'sent' | 'delivered' | 'read' | 'failed';

export interface MerchantsTable {
  id: Generated<string>;
  phone: string;
  business_name: string | null;
  language: ColumnType<Language, Language | undefined, Language>;
  next_invoice_number: Generated<number>;
  created_at: Generated<Date>;
  updated_at: Timestamp;
}

export interface ConversationsTable {
  phone: string;
  state: Json;
  language: ColumnType<Language, Language | undefined, Language>;
  last_inbound_at: NullableTimestamp;
  created_at: Generated<Date>;
  updated_at: Timestamp;
}

export interface InvoicesTable {
  id: Generated<string>;
  merchant_id: string;
  number: number;
  customer_phone: string;
  amount: Money;
  currency: ColumnType<'KES', 'KES' | undefined, 'KES'>;
  description: string;
  status: ColumnType<InvoiceStatus, InvoiceStatus | undefined, InvoiceStatus>;
  due_date: ColumnType<Date | null, string | null | undefined, string | null>;
  sent_at: NullableTimestamp;
  paid_at: NullableTimestamp;
  cancelled_at: NullableTimestamp;
  mpesa_receipt: string | null;
  created_at: Generated<Date>;
  updated_at: Timestamp;
}

export interface PaymentAttemptsTable {
  id: Generated<string>;
  invoice_id: string;
  checkout_request_id: string | null;
  merchant_request_id: string | null;
  amount: Money;
  phone: string;
  callback_token_hash: string;
  status: ColumnType<PaymentAttemptStatus, PaymentAttemptStatus | undefined, PaymentAttemptStatus>;
  result_code: number | null;
  result_desc: string | null;
  mpesa_receipt: string | null;
  created_at: Generated<Date>;
  updated_at: Timestamp;
  completed_at: NullableTimestamp;
  push_started_at: NullableTimestamp;
  /** The push got no clear answer (timeout, bare 5xx): the prompt may be on the phone although the attempt ended. */
  push_unclear: Generated<boolean>;
  initiated_by: ColumnType<PaymentInitiator, PaymentInitiator | undefined, PaymentInitiator>;
  review_reason: string | null;
  last_queried_at: NullableTimestamp;
  query_count: Generated<number>;
}

export type PaymentInitiator = 'invoice_sent' | 'customer' | 'merchant_remind';

export interface InvoiceRemindersTable {
  invoice_id: string;
  kind: 'due_tomorrow' | 'due_today';
  sent_at: Generated<Date>;
}

export interface DashboardLinksTable {
  token_hash: string;
  merchant_id: string;
  expires_at: Timestamp;
  used_at: NullableTimestamp;
  created_at: Generated<Date>;
}

export interface DashboardSessionsTable {
  token_hash: string;
  merchant_id: string | null;
  /** Admin sessions: which STATS_API_TOKEN opened them (src/http/auth.ts adminKey). */
  admin_key: string | null;
  expires_at: Timestamp;
  created_at: Generated<Date>;
}

export interface InboundEventsTable {
  id: Generated<string>;
  source: InboundSource;
  external_key: string;
  payload: Json;
  status: ColumnType<InboundStatus, InboundStatus | undefined, InboundStatus>;
  attempts: Generated<number>;
  last_error: string | null;
  received_at: Generated<Date>;
  processed_at: NullableTimestamp;
  /** Last change (for the retry sweep). */
  updated_at: Generated<Date>;
}

export interface OutboundMessagesTable {
  id: Generated<string>;
  recipient: string;
  kind: string;
  content: Json;
  invoice_id: string | null;
  channel: Channel | null;
  status: ColumnType<OutboundStatus, OutboundStatus | undefined, OutboundStatus>;
  provider_message_id: string | null;
  sms_message_id: string | null;
  attempts: Generated<number>;
  last_error: string | null;
  fallback_reason: string | null;
  /** Not claimed before this (a retry's backoff); null: due now. */
  next_attempt_at: NullableTimestamp;
  fell_back_at: NullableTimestamp;
  created_at: Generated<Date>;
  updated_at: Timestamp;
}

export interface InvoiceEventsTable {
  id: ColumnType<string, never, never>;
  invoice_id: string;
  actor: string;
  type: string;
  data: ColumnType<unknown, string | undefined, string>;
  created_at: Generated<Date>;
}

/** Figures of invoices summed per Nairobi day of creation, status and due date ('infinity': none). */
export interface InvoiceStatsTable {
  day: ColumnType<Date, string, string>;
  status: InvoiceStatus;
  due_date: ColumnType<Date, string, string>;
  invoices: ColumnType<string, number, number>;
  amount: ColumnType<string, number, number>;
  ever_sent: ColumnType<string, number, number>;
  paid_after_sent: ColumnType<string, number, number>;
  pay_seconds: ColumnType<string, number, number>;
  pay_count: ColumnType<string, number, number>;
}

/** Invoices sent, invoices paid and the amount collected, per Nairobi day of sending or paying. */
export interface InvoiceActivityTable {
  day: ColumnType<Date, string, string>;
  sent: ColumnType<string, number, number>;
  paid: ColumnType<string, number, number>;
  collected: ColumnType<string, number, number>;
}

export interface Database {
  merchants: MerchantsTable;
  conversations: ConversationsTable;
  invoices: InvoicesTable;
  payment_attempts: PaymentAttemptsTable;
  inbound_events: InboundEventsTable;
  outbound_messages: OutboundMessagesTable;
  invoice_events: InvoiceEventsTable;
  invoice_reminders: InvoiceRemindersTable;
  dashboard_links: DashboardLinksTable;
  dashboard_sessions: DashboardSessionsTable;
  invoice_stats_daily: InvoiceStatsTable;
  invoice_stats_delta: InvoiceStatsTable;
  invoice_activity_daily: InvoiceActivityTable;
  invoice_activity_delta: InvoiceActivityTable;
}

export type Merchant = Selectable<MerchantsTable>;
export type NewMerchant = Insertable<MerchantsTable>;
export type Invoice = Selectable<InvoicesTable>;
export type NewInvoice = Insertable<InvoicesTable>;
export type InvoiceUpdate = Updateable<InvoicesTable>;
