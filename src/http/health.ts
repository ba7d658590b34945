/** Liveness, readiness and metrics: what Fly's checks and Prometheus scrape. */
import { Hono } from 'hono';
import type { Config } from '../config.js';
import type { DatabaseHandle } from '../db/connect.js';
import type { Metrics } from '../metrics.js';
import { bearerToken, sameSecret } from '../security.js';
import { PRIVATE_NETWORKS, proxyTrust, socketAddress } from './client-address.js';
import { errorBody } from './errors.js';
import type { AppEnv } from './middleware.js';

const privateNetwork = proxyTrust(PRIVATE_NETWORKS);

/** Readiness fails when the database does not answer within this long. */
export const READY_TIMEOUT_MS = 1_000;

export function healthRoutes(deps: { database: Pick<DatabaseHandle, 'ping'>; metrics: Metrics; config: Pick<Config, 'metrics'> }): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  routes.get('/healthz', (c) => c.json({ status: 'ok' }));
  routes.get('/readyz', async (c) => {
    const connected = await deps.database.ping(READY_TIMEOUT_MS);
    return connected
      ? c.json({ status: 'ready', database: 'connected' })
      : c.json({ status: 'unavailable', database: 'disconnected' }, 503);
  });
  routes.get('/metrics', async (c) => {
    // For the private network (Fly's scraper): a request through Fly's public edge carries
    // Fly-Client-IP, and payment and message volumes are not for the internet.
    if (c.req.header('fly-client-ip') !== undefined) return c.json(errorBody(c, 'not_found', `No route for GET ${c.req.path}.`), 404);
    // Off Fly (no private network to rely on), METRICS_TOKEN: the scraper sends it as a bearer token.
    const token = deps.config.metrics.token;
    if (token === undefined) {
      // Without one, only a caller on a private network reaching this process directly (Fly's
      // scraper over its private network): not one from a public address, nor one relayed by a
      // proxy (X-Forwarded-For), which is how the internet reaches a deployment off Fly.
      const socket = socketAddress(c);
      if (c.req.header('x-forwarded-for') !== undefined || (socket !== undefined && !privateNetwork(socket))) {
        return c.json(errorBody(c, 'not_found', `No route for GET ${c.req.path}.`), 404);
      }
    } else {
      const offered = bearerToken(c.req.header('authorization'));
      if (offered === undefined || !sameSecret(offered, token)) {
        c.header('WWW-Authenticate', 'Bearer realm="metrics"');
        return c.json(errorBody(c, 'unauthorized', 'GET /metrics needs Authorization: Bearer <METRICS_TOKEN>.'), 401);
      }
    }
    const body = await deps.metrics.registry.metrics();
    return c.body(body, 200, { 'Content-Type': deps.metrics.registry.contentType });
  });
  return routes;
}
