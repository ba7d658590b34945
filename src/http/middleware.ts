/**
 * What every request goes through: a request id (taken from X-Request-Id or
 * X-Correlation-ID when it is sane, generated otherwise, echoed back), a child logger
 * carrying it as `correlation_id`, one summary log line, security headers, a body-size
 * limit, per-route metrics, and JSON errors.
 */
import { randomUUID } from 'node:crypto';
import type { Context, Hono, MiddlewareHandler, Next } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import { secureHeaders } from 'hono/secure-headers';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { ProxyTrust } from './client-address.js';
import { ApiError, errorBody } from './errors.js';

export type AppEnv = { Variables: { requestId: string; logger: Logger; proxyTrust?: ProxyTrust; onFly?: boolean } };

/** Webhook payloads from Meta can reach about 3 MB; nothing else we accept is large. */
export const WEBHOOK_BODY_LIMIT = 3 * 1024 * 1024;
export const DEFAULT_BODY_LIMIT = 64 * 1024;
/**
 * Bodies over DEFAULT_BODY_LIMIT (webhooks only) held in memory at once, at most: each is read
 * whole before its signature can be checked, so anyone could otherwise fill a 512 MB machine
 * with slow 3 MB uploads. One past it is answered 503 at once, before its body is read (Meta
 * sends it again later); real webhooks are a few kilobytes and never wait for this.
 */
export const LARGE_BODIES_BUDGET = 24 * 1024 * 1024;
const largeBodyPrefixes = ['/whatsapp/'];

const saneRequestId = /^[A-Za-z0-9._:\-]{1,128}$/;

/**
 * Paths whose last part is a secret (the STK callback's per-attempt token, the incoming-SMS
 * and delivery-report routes'), wherever they appear in the path and however its slashes are doubled or its case
 * changed: a provider configured with a base URL ending in `/` calls `//sms/inbound/<token>`,
 * which no route matches, and its 404 must not log the token either.
 */
const secretPaths = [/^(.*?\/payments\/+stk\/+callback\/+).+$/is, /^(.*?\/sms\/+inbound\/+).+$/is, /^(.*?\/sms\/+delivery-report\/+).+$/is];

/** `path` with percent-escapes decoded where they decode (a `%2F` is a slash to the patterns above). */
function decoded(path: string): string {
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}

/**
 * The path as it may be logged. A route with parameters may carry a secret in them: only its
 * pattern is logged. A request answered before any route matched (a 404, a 413 from the body
 * limit) has no pattern: a path known to end in a secret is logged with the secret masked.
 */
export function loggablePath(routePath: string, path: string): { path?: string } {
  if (routePath.includes(':')) return {};
  const plain = decoded(path);
  for (const pattern of secretPaths) if (pattern.test(plain)) return { path: plain.replace(pattern, '$1…') };
  return { path };
}

function requestContext(logger: Logger, proxyTrust: ProxyTrust | undefined, onFly: boolean | undefined): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const offered = [c.req.header('x-request-id'), c.req.header('x-correlation-id')].find((id) => id !== undefined && saneRequestId.test(id));
    const requestId = offered ?? randomUUID();
    const requestLogger = logger.child({ correlation_id: requestId });
    c.set('requestId', requestId);
    c.set('logger', requestLogger);
    // The proxies whose address headers are believed (client-address.ts requestAddress).
    if (proxyTrust !== undefined) c.set('proxyTrust', proxyTrust);
    if (onFly !== undefined) c.set('onFly', onFly);
    const started = performance.now();
    // Set before the handler runs, so the response is built with it. Setting a header on a
    // finished response makes hono rebuild it (and the node adapter then streams it the slow way).
    c.header('X-Request-Id', requestId);
    try {
      await next();
    } finally {
      // A handler that returned a Response of its own did not get it: only then, the slow way.
      if (!c.res.headers.has('X-Request-Id')) c.header('X-Request-Id', requestId);
      const status = c.res.status;
      const line = {
        method: c.req.method,
        route: c.req.routePath,
        ...loggablePath(c.req.routePath, c.req.path),
        status,
        duration_ms: Math.round((performance.now() - started) * 100) / 100,
      };
      if (status >= 500) requestLogger.error(line, 'request failed');
      else requestLogger.info(line, 'request completed');
    }
  };
}

function sizedBodyLimit(budgetBytes: number): MiddlewareHandler<AppEnv> {
  const onError = (c: Context<AppEnv>, _bytes?: number) => c.json(errorBody(c, 'payload_too_large', 'The request body is too large.'), 413);
  const small = bodyLimit({ maxSize: DEFAULT_BODY_LIMIT, onError });
  const busy = (c: Context<AppEnv>, bytes: number) => {
    c.get('logger').warn({ bytes, in_flight_bytes: largeInFlight }, 'large request body refused for now: too many large bodies in memory');
    c.header('Retry-After', '5');
    return c.json(errorBody(c, 'busy', 'Too many large requests at once; try again shortly.'), 503);
  };
  // Bytes of large bodies being read or handled now (LARGE_BODIES_BUDGET).
  let largeInFlight = 0;

  /** A large route's body of unknown length (chunked): read here, counted as it arrives. */
  async function readCounted(c: Context<AppEnv>, next: Next) {
    const body = c.req.raw.body;
    if (body === null) return next();
    const reader = body.getReader();
    const chunks: Uint8Array[] = [];
    let size = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.byteLength;
        largeInFlight += value.byteLength;
        const refusal = size > WEBHOOK_BODY_LIMIT ? onError : size > DEFAULT_BODY_LIMIT && largeInFlight > budgetBytes ? busy : undefined;
        if (refusal !== undefined) {
          // The rest is read and dropped (up to a bound), so that the client gets the answer
          // instead of a connection reset while it is still writing.
          for (let dropped = 0; dropped < 2 * WEBHOOK_BODY_LIMIT; ) {
            const more = await reader.read();
            if (more.done) break;
            dropped += more.value.byteLength;
          }
          return refusal(c, size);
        }
        chunks.push(value);
      }
      c.req.raw = new Request(c.req.raw, { body: Buffer.concat(chunks) });
      return await next();
    } finally {
      largeInFlight -= size;
    }
  }

  return async (c, next) => {
    const isLarge = largeBodyPrefixes.some((prefix) => c.req.path.startsWith(prefix));
    // Node's parser reads exactly Content-Length bytes, so a declared length is checked from
    // the header alone. That also keeps the request lightweight: hono's bodyLimit looks at
    // the raw body stream, which makes the node adapter build a whole web Request.
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    const declared = c.req.header('content-length');
    const known = declared !== undefined && c.req.header('transfer-encoding') === undefined && /^\d{1,15}$/.test(declared);
    if (!known) return isLarge ? readCounted(c, next) : small(c, next);
    const size = Number(declared);
    if (size > (isLarge ? WEBHOOK_BODY_LIMIT : DEFAULT_BODY_LIMIT)) return onError(c);
    if (size <= DEFAULT_BODY_LIMIT) return next();
    // A large declared body is counted before it is read: one past the budget is not read at all.
    if (largeInFlight + size > budgetBytes) return busy(c, size);
    largeInFlight += size;
    try {
      return await next();
    } finally {
      largeInFlight -= size;
    }
  };
}

/** Installs the common middleware, the JSON 404 and the JSON error handler on `app`. */
export function applyCommonMiddleware(
  app: Hono<AppEnv>,
  deps: { logger: Logger; metrics: Metrics; proxyTrust?: ProxyTrust; onFly?: boolean; largeBodiesBudget?: number },
): void {
  app.use('*', requestContext(deps.logger, deps.proxyTrust, deps.onFly));
  app.use('*', secureHeaders());
  app.use('*', deps.metrics.httpMiddleware);
  app.use('*', sizedBodyLimit(deps.largeBodiesBudget ?? LARGE_BODIES_BUDGET));

  app.notFound((c) => {
    deps.metrics.httpErrors.inc({ code: 'not_found' });
    return c.json(errorBody(c, 'not_found', `No route for ${c.req.method} ${c.req.path}.`), 404);
  });

  app.onError((error, c) => {
    if (error instanceof ApiError) {
      deps.metrics.httpErrors.inc({ code: error.code });
      return c.json(errorBody(c, error.code, error.message), error.status);
    }
    if (error instanceof HTTPException) {
      const status = error.status as ContentfulStatusCode;
      const code = status === 413 ? 'payload_too_large' : status < 500 ? 'bad_request' : 'internal_error';
      deps.metrics.httpErrors.inc({ code });
      return c.json(errorBody(c, code, status < 500 ? error.message || 'Bad request.' : 'Something went wrong on our side.'), status);
    }
    (c.get('logger') ?? deps.logger).error({ error }, 'unhandled error');
    deps.metrics.httpErrors.inc({ code: 'internal_error' });
    return c.json(errorBody(c, 'internal_error', 'Something went wrong on our side; it has been logged.'), 500);
  });
}
