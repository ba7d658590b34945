/**
 * `POST /sms/delivery-report`: Africa's Talking delivery reports, form-encoded or JSON.
 * Unsigned by the provider, so a report can only move a message we sent (known
 * messageId) along its lifecycle; each (id, status) is applied once.
 */
import { jsonb } from '../db/json.js';
import { Hono } from 'hono';
import { sql } from 'kysely';
import { z } from 'zod';
import type { Deps } from '../deps.js';
import type { OutboundStatus } from '../db/schema.js';
import { ApiError, describeIssues } from './errors.js';
import type { AppEnv } from './middleware.js';

const DeliveryReport = z.looseObject({
  id: z.string().trim().min(1).max(200),
  status: z.enum(['Sent', 'Submitted', 'Buffered', 'Success', 'Failed', 'Rejected', 'AbsentSubscriber', 'Expired']),
  phoneNumber: z.string().optional(),
  networkCode: z.string().optional(),
  failureReason: z.string().max(200).optional(),
  retryCount: z.string().optional(),
});

const mapped: Record<z.infer<typeof DeliveryReport>['status'], OutboundStatus> = {
  Sent: 'sent',
  Submitted: 'sent',
  Buffered: 'sent',
  Success: 'delivered',
  Failed: 'failed',
  Rejected: 'failed',
  AbsentSubscriber: 'failed',
  Expired: 'failed',
};

async function readReport(contentType: string, read: { text(): Promise<string> }): Promise<unknown> {
  const text = await read.text();
  if (/application\/json/i.test(contentType)) {
    try {
      return JSON.parse(text);
    } catch {
      throw new ApiError(400, 'malformed_json', 'The request body is not valid JSON.');
    }
  }
  if (/application\/x-www-form-urlencoded/i.test(contentType)) return Object.fromEntries(new URLSearchParams(text));
  throw new ApiError(415, 'unsupported_media_type', 'Send the report as application/x-www-form-urlencoded or application/json.');
}

export function smsRoutes(deps: Pick<Deps, 'database' | 'metrics'>): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  routes.post('/sms/delivery-report', async (c) => {
    const body = await readReport(c.req.header('content-type') ?? '', c.req);
    const parsed = DeliveryReport.safeParse(body);
    if (!parsed.success) throw new ApiError(422, 'invalid_report', describeIssues(parsed.error));
    const report = parsed.data;
    const next = mapped[report.status];
    const outcome = await deps.database.db.transaction().execute(async (trx) => {
      const message = await trx
        .selectFrom('outbound_messages')
        .select(['id', 'status'])
        .where('sms_message_id', '=', report.id)
        .forUpdate()
        .executeTakeFirst();
      if (message === undefined) return 'unknown' as const;
      const inserted = await trx
        .insertInto('inbound_events')
        .values({ source: 'sms_report', external_key: `${report.id}:${report.status}`, payload: jsonb(report), status: 'processed', attempts: 1, processed_at: sql`now()` })
        .onConflict((oc) => oc.columns(['source', 'external_key']).doNothing())
        .returning('id')
        .executeTakeFirst();
      if (inserted === undefined) return 'duplicate' as const;
      // Never move backwards: a late "Sent" after "Success" changes nothing.
      const order: Record<OutboundStatus, number> = { queued: 0, sending: 0, sent: 1, failed: 2, delivered: 3, read: 4 };
      if (order[next] > order[message.status]) {
        await trx
          .updateTable('outbound_messages')
          .set({ status: next, updated_at: sql`now()`, ...(next === 'failed' ? { last_error: `sms ${report.status} ${report.failureReason ?? ''}`.trim() } : {}) })
          .where('id', '=', message.id)
          .execute();
      }
      return 'processed' as const;
    });
    deps.metrics.inboundEvents.inc({ source: 'sms_report', outcome });
    if (outcome === 'unknown') throw new ApiError(404, 'unknown_message', 'No SMS with this id was sent by this service.');
    return c.json({ status: outcome }, 200);
  });
  return routes;
}
