/**
 * `POST /sms/delivery-report/<SMS_REPORT_TOKEN>` (or the bare `/sms/delivery-report` while no
 * SMS_REPORT_TOKEN is set): Africa's Talking delivery reports, form-encoded or JSON. Unsigned
 * by the provider, so a report can only move a message we sent (known messageId) along its
 * lifecycle; each (id, status) is applied once (src/inbound/sms-report.ts). The secret URL
 * keeps strangers' reports out altogether (a forged one, while an SMS is in flight, would be
 * kept for retries).
 *
 * `POST /sms/inbound/<SMS_INBOUND_TOKEN>`: Africa's Talking incoming messages (a person's
 * text to the SMS number, "reply PAY"), form-encoded or JSON; each message id is applied
 * once (src/inbound/sms-message.ts). Unsigned too, and a text runs a conversation turn (a PAY
 * starts an M-PESA prompt), so only a caller that knows the secret URL gets in; any other
 * path under /sms/inbound/ is answered 404 as if there were no such route.
 */
import { Hono, type Context } from 'hono';
import { parseStorableJson, storable } from '../db/json.js';
import type { Deps } from '../deps.js';
import { DeliveryReport, UnknownReportError } from '../inbound/sms-report.js';
import { IncomingSms } from '../inbound/sms-message.js';
import { sameSecret } from '../security.js';
import { ApiError, describeIssues } from './errors.js';
import type { AppEnv } from './middleware.js';

async function readBody(contentType: string, read: { text(): Promise<string> }): Promise<unknown> {
  const text = await read.text();
  if (/application\/json/i.test(contentType)) {
    try {
      return parseStorableJson(text);
    } catch {
      throw new ApiError(400, 'malformed_json', 'The request body is not valid JSON.');
    }
  }
  // U+0000 cannot be stored (text or jsonb columns): gone at the boundary, as for webhooks.
  if (/application\/x-www-form-urlencoded/i.test(contentType)) return storable(Object.fromEntries(new URLSearchParams(text)));
  throw new ApiError(415, 'unsupported_media_type', 'Send the body as application/x-www-form-urlencoded or application/json.');
}

export function smsRoutes(deps: Pick<Deps, 'inbound' | 'metrics' | 'config'>): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  /** A request to a secret route without its secret: counted, logged (never the token), and answered 404 as for no route. */
  const notTheSecretUrl = (c: Context<AppEnv>, source: 'sms_report' | 'sms_message', outcome: 'forged' | 'not_configured', message: string, route: string) => {
    deps.metrics.inboundEvents.inc({ source, outcome });
    c.get('logger').warn({ configured: outcome !== 'not_configured' }, message);
    return new ApiError(404, 'not_found', `No route for POST ${route}.`);
  };
  const deliveryReport = async (c: Context<AppEnv>, token: string | undefined) => {
    // With SMS_REPORT_TOKEN set, only its secret URL takes reports: the bare path (or another
    // token) is answered 404 as if there were no such route, and nothing is read or kept.
    const expected = deps.config.sms.reportToken;
    if (expected !== undefined && (token === undefined || !sameSecret(token, expected))) {
      throw notTheSecretUrl(c, 'sms_report', 'forged', 'sms delivery report refused: not the secret URL', '/sms/delivery-report…');
    }
    if (expected === undefined && token !== undefined) throw new ApiError(404, 'not_found', 'No route for POST /sms/delivery-report/….');
    const body = await readBody(c.req.header('content-type') ?? '', c.req);
    const parsed = DeliveryReport.safeParse(body);
    if (!parsed.success) throw new ApiError(422, 'invalid_report', describeIssues(parsed.error));
    try {
      // processed, duplicate, or retrying (kept: it may be about an SMS whose success is being recorded).
      return c.json({ status: await deps.inbound.handleDeliveryReport(parsed.data) }, 200);
    } catch (error) {
      if (!(error instanceof UnknownReportError)) throw error;
      deps.metrics.inboundEvents.inc({ source: 'sms_report', outcome: 'unknown' });
      throw new ApiError(404, 'unknown_message', error.message);
    }
  };
  routes.post('/sms/delivery-report', (c) => deliveryReport(c, undefined));
  routes.post('/sms/delivery-report/:token', (c) => deliveryReport(c, c.req.param('token')));
  routes.post('/sms/inbound/:token', async (c) => {
    const expected = deps.config.sms.inboundToken;
    if (expected === undefined || !sameSecret(c.req.param('token'), expected)) {
      throw notTheSecretUrl(c, 'sms_message', expected === undefined ? 'not_configured' : 'forged', 'incoming SMS refused: not the secret URL', '/sms/inbound/…');
    }
    const body = await readBody(c.req.header('content-type') ?? '', c.req);
    const parsed = IncomingSms.safeParse(body);
    if (!parsed.success) throw new ApiError(422, 'invalid_message', describeIssues(parsed.error));
    // processed, duplicate, or retrying (kept and applied again by the retry job).
    return c.json({ status: await deps.inbound.handleIncomingSms(parsed.data) }, 200);
  });
  return routes;
}
