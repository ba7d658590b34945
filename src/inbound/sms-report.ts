/**
 * Africa's Talking delivery reports, applied to the SMS they are about. Unsigned by the
 * provider, so a report can only move a message this service sent (known messageId) along
 * its lifecycle, never backwards. A report can arrive before its SMS is recorded as sent
 * (the provider answers the send, then the success is written): while an SMS send is in
 * flight, an unknown report is kept and retried like any inbound event, instead of lost.
 */
import { sql, type Transaction } from 'kysely';
import { z } from 'zod';
import type { Database, OutboundStatus } from '../db/schema.js';
import { markInvoicesUnreached } from '../delivery/invoice-reach.js';
import { messageReportedOn } from './match.js';
import type { Outbox } from '../delivery/outbox.js';

// Only the fields read here are kept (the route is unsigned: nothing else a caller adds is stored).
export const DeliveryReport = z.object({
  id: z.string().trim().min(1).max(200),
  status: z.enum(['Sent', 'Submitted', 'Buffered', 'Success', 'Failed', 'Rejected', 'AbsentSubscriber', 'Expired']),
  phoneNumber: z.string().optional(),
  // Form bodies carry text; a JSON report may carry these two as numbers: either reads.
  networkCode: z.union([z.string(), z.number().transform(String)]).optional(),
  failureReason: z.string().max(200).optional(),
  retryCount: z.union([z.string(), z.number().transform(String)]).optional(),
});
export type DeliveryReport = z.infer<typeof DeliveryReport>;

const mapped: Record<DeliveryReport['status'], OutboundStatus> = {
  Sent: 'sent',
  Submitted: 'sent',
  Buffered: 'sent',
  Success: 'delivered',
  Failed: 'failed',
  Rejected: 'failed',
  AbsentSubscriber: 'failed',
  Expired: 'failed',
};

/** The event a report is kept under: each (id, status) applies once. */
export const reportKey = (report: DeliveryReport): string => `${report.id}:${report.status}`;

/** No message has this id yet, but an SMS send is in flight: it may be that one's (retried). */
export class ReportNotYetMatchedError extends Error {}
/** No message has this id and no SMS is being sent: not a report about anything of ours. */
export class UnknownReportError extends Error {}

/** Returns the ids of messages it wrote (a notice to the merchant), to dispatch after commit. */
export async function applyDeliveryReport(trx: Transaction<Database>, report: DeliveryReport, outbox: Pick<Outbox, 'enqueue'>): Promise<string[]> {
  const message = await messageReportedOn(
    () => trx.selectFrom('outbound_messages').select(['id', 'status']).where('sms_message_id', '=', report.id).forUpdate().executeTakeFirst(),
    async () => (await trx.selectFrom('outbound_messages').select('id').where('channel', '=', 'sms').where('status', '=', 'sending').limit(1).executeTakeFirst()) !== undefined,
    { notYet: () => new ReportNotYetMatchedError('no SMS with this id yet (one is being sent)'), notOurs: () => new UnknownReportError('No SMS with this id was sent by this service.') },
  );
  const next = mapped[report.status];
  // Never move backwards: a late "Sent" after "Success" changes nothing.
  const order: Record<OutboundStatus, number> = { queued: 0, sending: 0, sent: 1, failed: 2, delivered: 3, read: 4 };
  if (order[next] <= order[message.status]) return [];
  await trx
    .updateTable('outbound_messages')
    .set({ status: next, updated_at: sql`now()`, ...(next === 'failed' ? { last_error: `sms ${report.status} ${report.failureReason ?? ''}`.trim() } : {}) })
    .where('id', '=', message.id)
    .execute();
  // An invoice whose SMS (its last channel) failed reached its customer on no channel.
  return next === 'failed' ? markInvoicesUnreached(trx, [message.id], outbox) : [];
}
