/**
 * Invoice rules, pure: due dates, overdue, what may be cancelled or reminded.
 */
import type { InvoiceStatus } from '../db/schema.js';

/** Unpaid invoices are due this many days after they are sent. */
export const INVOICE_DUE_DAYS = 7;
const NAIROBI_OFFSET_MS = 3 * 60 * 60 * 1000; // Africa/Nairobi is UTC+3 all year (no DST).

/** The due date (a Nairobi calendar day, as an ISO date string) for an invoice sent at `sentAt`. */
export function dueDateFor(sentAt: Date, days = INVOICE_DUE_DAYS): string {
  const nairobi = new Date(sentAt.getTime() + NAIROBI_OFFSET_MS + days * 24 * 60 * 60 * 1000);
  return nairobi.toISOString().slice(0, 10);
}

/** The Nairobi calendar day of an instant, as YYYY-MM-DD. */
export function nairobiToday(now: Date): string {
  return new Date(now.getTime() + NAIROBI_OFFSET_MS).toISOString().slice(0, 10);
}

/** The instant a Nairobi calendar day (YYYY-MM-DD) starts. */
export function nairobiMidnight(day: string): Date {
  return new Date(`${day}T00:00:00+03:00`);
}

/** The Nairobi day `days` after `day` (negative: before). */
export function addDays(day: string, days: number): string {
  return nairobiToday(new Date(nairobiMidnight(day).getTime() + days * 24 * 60 * 60 * 1000));
}

export function isUnpaid(status: InvoiceStatus): boolean {
  return status === 'pending' || status === 'sent' || status === 'failed';
}

/** Past its due day (in Nairobi) and still unpaid. */
export function isOverdue(status: InvoiceStatus, dueDate: string | null, now: Date): boolean {
  return dueDate !== null && isUnpaid(status) && nairobiToday(now) > dueDate;
}

export type Refusal = { ok: false; reason: 'paid' | 'cancelled' };

export function decideCancel(status: InvoiceStatus): { ok: true } | Refusal {
  if (status === 'paid') return { ok: false, reason: 'paid' };
  if (status === 'cancelled') return { ok: false, reason: 'cancelled' };
  return { ok: true };
}

export function decideRemind(status: InvoiceStatus): { ok: true } | Refusal {
  return decideCancel(status);
}
