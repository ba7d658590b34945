/**
 * The dashboard's routes on the real middleware and the real /stats API, over a test
 * database: createApp's own app when it mounts dashboardRoutes, else the same composition.
 */
import { Hono } from 'hono';
import { dashboardRoutes } from '../../src/http/dashboard.js';
import { applyCommonMiddleware, type AppEnv } from '../../src/http/middleware.js';
import { statsRoutes } from '../../src/http/stats.js';
import { buildTestApp, type TestApp } from './app.js';
import type { TestDatabase } from './database.js';

export type DashboardApp = { deps: TestApp['deps']; app: Hono<AppEnv> };

/** createApp itself once it mounts dashboardRoutes; until then the same pieces, composed here. */
export function buildDashboardApp(database: TestDatabase, options: { env?: Record<string, string>; now?: () => Date } = {}): DashboardApp {
  const built = buildTestApp(database, options);
  const { deps } = built;
  if (built.app.routes.some((route) => route.path === '/dashboard')) return { deps, app: built.app };
  const app = new Hono<AppEnv>();
  applyCommonMiddleware(app, deps);
  app.route('/', dashboardRoutes(deps));
  app.route('/', statsRoutes(deps));
  return { deps, app };
}

/** The `name=value` of a Set-Cookie header (for sending it back). */
export function cookiePair(setCookie: string | null): string {
  if (setCookie === null) throw new Error('no Set-Cookie header');
  return setCookie.split(';')[0]!;
}
