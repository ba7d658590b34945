/**
 * Builds the Hono app from its dependencies, so tests build exactly what production runs.
 */
import { Hono } from 'hono';
import type { Deps } from './deps.js';
import { proxyTrust } from './http/client-address.js';
import { healthRoutes } from './http/health.js';
import { dashboardRoutes } from './http/dashboard.js';
import { applyCommonMiddleware, type AppEnv } from './http/middleware.js';
import { paymentRoutes } from './http/payments.js';
import { simulatorRoutes } from './http/simulator.js';
import { smsRoutes } from './http/sms.js';
import { statsRoutes } from './http/stats.js';
import { whatsappRoutes } from './http/whatsapp.js';

export function createApp(deps: Deps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  applyCommonMiddleware(app, { ...deps, proxyTrust: proxyTrust(deps.config.trustedProxies), onFly: deps.config.onFly });
  app.route('/', healthRoutes(deps));
  app.route('/', whatsappRoutes(deps));
  app.route('/', smsRoutes(deps));
  app.route('/', paymentRoutes(deps));
  app.route('/', statsRoutes(deps));
  app.route('/', dashboardRoutes(deps));
  if (deps.simulator !== undefined) app.route('/', simulatorRoutes(deps, deps.simulator));
  return app;
}
