/**
 * `POST /payments/stk/callback/:token`: Safaricom's STK callback. Callbacks are unsigned, so
 * the per-attempt token in the URL is the credential: an unknown token, or a token whose
 * attempt names another CheckoutRequestID, gets a 4xx, a warning and a metric, and changes
 * nothing. One whose body does not read is refused the same way, unless its token names an
 * attempt: then it is stored as rejected for a person and accepted. An optional allow-list of source addresses (MPESA_CALLBACK_ALLOWED_IPS) is applied
 * first, trusting Fly-Client-IP / X-Forwarded-For only from a proxy on a private network.
 */
import { parseStorableJson } from '../db/json.js';
import { Hono } from 'hono';
import type { Deps } from '../deps.js';
import { parseStkCallback } from '../providers/mpesa/schemas.js';
import { requestAddress } from './client-address.js';
import { ApiError } from './errors.js';
import type { AppEnv } from './middleware.js';

export function paymentRoutes(deps: Pick<Deps, 'config' | 'payments' | 'metrics' | 'jobs'>): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  const accepted = { ResultCode: 0, ResultDesc: 'Accepted' };

  routes.post('/payments/stk/callback/:token', async (c) => {
    const logger = c.get('logger');
    const allowed = deps.config.mpesa.callbackAllowedIps;
    if (allowed.length > 0) {
      const address = requestAddress(c);
      if (address === undefined || !allowed.includes(address)) {
        deps.metrics.callbacksRejected.inc({ reason: 'ip_not_allowed' });
        logger.warn({ reason: 'ip_not_allowed' }, 'stk callback refused');
        throw new ApiError(403, 'forbidden', 'This address may not send payment callbacks.');
      }
    }
    const raw = await c.req.text();
    let parsed: ReturnType<typeof parseStkCallback>;
    try {
      parsed = parseStkCallback(parseStorableJson(raw));
    } catch {
      parsed = { ok: false, error: 'the body is not valid JSON' };
    }
    if (!parsed.ok) {
      // Whose is it? Genuine (its token names an attempt): stored as rejected for a person and
      // answered as accepted (it may carry the M-PESA receipt number, which nothing else
      // does); otherwise refused like any callback with an unknown token.
      deps.metrics.callbacksRejected.inc({ reason: 'malformed' });
      const stored = await deps.payments.storeUnreadableCallback(c.req.param('token'), raw, parsed.error);
      if (stored === 'unknown_token') {
        logger.warn({ reason: 'malformed' }, 'stk callback refused');
        throw new ApiError(404, 'unknown_callback', 'No payment attempt matches this callback.');
      }
      return c.json(accepted, 200);
    }
    // Right after start-up the server listens before the job queues exist (a release's new
    // queue, on an existing database): a callback that arrives then waits for them, as webhooks do.
    await deps.jobs.ready;
    const outcome = await deps.payments.handleCallback(c.req.param('token'), parsed.value);
    if (outcome.status === 'rejected') {
      deps.metrics.callbacksRejected.inc({ reason: outcome.reason });
      logger.warn({ reason: outcome.reason }, 'stk callback refused');
      throw new ApiError(outcome.reason === 'unknown_token' ? 404 : 403, 'unknown_callback', 'No payment attempt matches this callback.');
    }
    // Kept: not applied yet, but stored with its retry job (a 500 might never be answered by a resend).
    logger.info({ outcome: outcome.status, result_code: parsed.value.resultCode }, outcome.status === 'kept' ? 'stk callback kept for retry' : 'stk callback applied');
    return c.json(accepted, 200);
  });

  return routes;
}
