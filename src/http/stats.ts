/**
 * `GET /stats/summary` (and the dashboard's `GET /stats/daily`, `GET /stats/merchants`):
 * business figures, so every route needs a credential (admin bearer token or a dashboard
 * session). A merchant's session sees that merchant only; asking for another is a 403.
 */
import { Hono, type Context } from 'hono';
import { z } from 'zod';
import type { Deps } from '../deps.js';
import { parsePhone } from '../domain/parse.js';
import { daily, defaultPeriod, summary, type MerchantScope, type Period } from '../stats/summary.js';
import type { Viewer } from './auth.js';
import { ApiError } from './errors.js';
import type { AppEnv } from './middleware.js';

/**
 * A calendar day this service can have figures for. The years are bounded: past 9999 the ISO
 * form of a day changes shape (the daily series could never reach `to`), and the database
 * stores no year 0.
 */
const FIRST_DAY = '2000-01-01';
const LAST_DAY = '2099-12-31';
const isoDay = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/)
  .refine((d) => !Number.isNaN(Date.parse(`${d}T00:00:00Z`)) && new Date(`${d}T00:00:00Z`).toISOString().startsWith(d))
  .refine((d) => d >= FIRST_DAY && d <= LAST_DAY);
const MAX_DAYS = 366 * 3;

/** Reads `from`, `to` and `merchant`; 400 naming the parameter that is wrong. */
function readScope(c: Context<AppEnv>, viewer: Viewer, now: Date): { period: Period; merchant: MerchantScope } {
  const fallback = defaultPeriod(now);
  const from = c.req.query('from') ?? fallback.from;
  const to = c.req.query('to') ?? fallback.to;
  if (!isoDay.safeParse(from).success) throw new ApiError(400, 'invalid_parameter', `from: expected a date like 2026-11-01, from ${FIRST_DAY} to ${LAST_DAY}`);
  if (!isoDay.safeParse(to).success) throw new ApiError(400, 'invalid_parameter', `to: expected a date like 2026-11-30, from ${FIRST_DAY} to ${LAST_DAY}`);
  if (from > to) throw new ApiError(400, 'invalid_parameter', 'from: must not be after to');
  if ((Date.parse(to) - Date.parse(from)) / 86_400_000 > MAX_DAYS) throw new ApiError(400, 'invalid_parameter', `to: a period spans at most ${MAX_DAYS} days`);

  const offered = c.req.query('merchant');
  let merchantPhone: string | null = null;
  if (offered !== undefined && offered !== '') {
    const phone = parsePhone(offered);
    if (!phone.ok) throw new ApiError(400, 'invalid_parameter', 'merchant: expected a Kenyan mobile number, e.g. 0712 345 678');
    merchantPhone = phone.value;
  }
  if (viewer.kind === 'merchant') {
    if (merchantPhone !== null && merchantPhone !== viewer.phone) throw new ApiError(403, 'forbidden', 'A merchant session shows that merchant only.');
    return { period: { from, to }, merchant: { id: viewer.merchantId } };
  }
  // An unknown merchant has, truthfully, nothing: zeros, not an error that reveals who exists.
  return { period: { from, to }, merchant: merchantPhone === null ? null : { phone: merchantPhone } };
}

export function statsRoutes(deps: Pick<Deps, 'database' | 'auth' | 'now'>): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  const { now } = deps;

  routes.get('/stats/summary', async (c) => {
    const viewer = await deps.auth.require(c);
    const at = now();
    const scope = readScope(c, viewer, at);
    c.header('Cache-Control', 'no-store');
    return c.json(await summary(deps.database, scope.period, scope.merchant, at));
  });

  routes.get('/stats/daily', async (c) => {
    const viewer = await deps.auth.require(c);
    const scope = readScope(c, viewer, now());
    c.header('Cache-Control', 'no-store');
    return c.json({ period: scope.period, days: await daily(deps.database.db, scope.period, scope.merchant) });
  });

  routes.get('/stats/merchants', async (c) => {
    const viewer = await deps.auth.require(c);
    if (viewer.kind !== 'admin') throw new ApiError(403, 'forbidden', 'Only the admin can list merchants.');
    const rows = await deps.database.db.selectFrom('merchants').select(['phone', 'business_name']).orderBy('business_name').limit(1000).execute();
    c.header('Cache-Control', 'no-store');
    return c.json({ merchants: rows.map((r) => ({ phone: r.phone, business_name: r.business_name })) });
  });

  return routes;
}
