/**
 * `GET /whatsapp/webhook`: Meta's subscription check.
 * `POST /whatsapp/webhook`: signature on the raw bytes first (nothing is stored for a
 * forged request), then zod (the envelope, then each message and status on its own), then
 * one transaction per event; answered as soon as the events are committed. Replies go out
 * after the answer (eager dispatch), never before.
 */
import { JsonTooDeepError, parseStorableJson } from '../db/json.js';
import { Hono } from 'hono';
import type { Deps } from '../deps.js';
import { WebhookEnvelope, splitWebhook } from '../providers/whatsapp/schemas.js';
import { verifySignature } from '../providers/whatsapp/signature.js';
import { sameSecret } from '../security.js';
import { describeIssues, errorBody } from './errors.js';
import type { AppEnv } from './middleware.js';


export function whatsappRoutes(deps: Pick<Deps, 'config' | 'inbound' | 'metrics' | 'outbox' | 'jobs'>): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();

  routes.get('/whatsapp/webhook', (c) => {
    const mode = c.req.query('hub.mode');
    const challenge = c.req.query('hub.challenge');
    const offeredToken = c.req.query('hub.verify_token');
    const { verifyToken } = deps.config.whatsapp;
    if (mode === 'subscribe' && challenge !== undefined && verifyToken !== undefined && offeredToken !== undefined && sameSecret(offeredToken, verifyToken)) {
      return c.text(challenge, 200);
    }
    c.get('logger').warn('webhook verification refused');
    return c.json(errorBody(c, 'forbidden', 'Verification token does not match.'), 403);
  });

  routes.post('/whatsapp/webhook', async (c) => {
    const raw = new Uint8Array(await c.req.arrayBuffer());
    const check = verifySignature(raw, c.req.header('x-hub-signature-256'), deps.config.whatsapp.appSecret);
    if (!check.ok) {
      deps.metrics.webhookSignatureFailures.inc({ reason: check.reason });
      c.get('logger').warn({ reason: check.reason, bytes: raw.byteLength }, 'webhook signature refused');
      return c.json(errorBody(c, 'invalid_signature', 'The X-Hub-Signature-256 header is missing or does not match the body.'), 401);
    }

    let json: unknown;
    try {
      // U+0000 and lone surrogates cannot be stored (jsonb): cleaned at the boundary.
      json = parseStorableJson(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('utf8'));
    } catch (error) {
      const reason = error instanceof JsonTooDeepError ? error.message : 'body is not JSON';
      await deps.inbound.storeRejected(raw, undefined, reason);
      c.get('logger').warn({ reason }, 'signed webhook body not accepted as JSON; stored as rejected');
      return c.json({ status: 'rejected' }, 200);
    }
    const parsed = WebhookEnvelope.safeParse(json);
    if (!parsed.success) {
      const reason = describeIssues(parsed.error);
      await deps.inbound.storeRejected(raw, json, reason);
      c.get('logger').warn({ reason }, 'signed webhook payload does not match the schema; stored as rejected');
      return c.json({ status: 'rejected' }, 200);
    }
    // Each message and status is read on its own: one we cannot read is kept as rejected, and
    // costs the others nothing (Meta does not send a payload again once answered 200).
    const { payload, rejected } = splitWebhook(parsed.data);
    if (rejected.length > 0) {
      const items = rejected.map(({ at, list, item, issues }) => ({ at, list, item, reason: describeIssues(issues) }));
      await deps.inbound.storeRejectedItems(items);
      c.get('logger').warn({ items: items.map(({ at, reason }) => ({ at, reason })) }, 'signed webhook items do not match the schema; stored as rejected, the others applied');
    }

    // Right after start-up the server listens before the job queues exist; a webhook that
    // arrives in that moment waits for them (before opening any transaction).
    await deps.jobs.ready;
    const result = await deps.inbound.handlePayload(payload);
    c.get('logger').info({ processed: result.processed, duplicates: result.duplicates, retrying: result.retrying }, 'webhook events committed');
    // Everything is committed: the replies go out after the answer (the jobs are the safety net).
    deps.outbox.dispatchSoon(result.outboundIds);
    return c.json(rejected.length > 0 ? { status: 'received', rejected: rejected.length } : { status: 'received' }, 200);
  });

  return routes;
}
