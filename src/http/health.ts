/** Liveness, readiness and metrics: what Fly's checks and Prometheus scrape. */
import { Hono } from 'hono';
import type { DatabaseHandle } from '../db/connect.js';
import type { Metrics } from '../metrics.js';
import type { AppEnv } from './middleware.js';

/** Readiness fails when the database does not answer within this long. */
export const READY_TIMEOUT_MS = 1_000;

export function healthRoutes(deps: { database: Pick<DatabaseHandle, 'ping'>; metrics: Metrics }): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  routes.get('/healthz', (c) => c.json({ status: 'ok' }));
  routes.get('/readyz', async (c) => {
    const connected = await deps.database.ping(READY_TIMEOUT_MS);
    return connected
      ? c.json({ status: 'ready', database: 'connected' })
      : c.json({ status: 'unavailable', database: 'disconnected' }, 503);
  });
  routes.get('/metrics', async (c) => {
    const body = await deps.metrics.registry.metrics();
    return c.body(body, 200, { 'Content-Type': deps.metrics.registry.contentType });
  });
  return routes;
}
