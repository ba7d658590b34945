/**
 * Who is asking for business data: the admin (Authorization: Bearer STATS_API_TOKEN, or a
 * dashboard session opened with that token) or one merchant (a session opened from a
 * single-use WhatsApp link). Tokens are compared in constant time; only hashes of links and
 * sessions are stored; failed attempts are rate-limited per address.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Context } from 'hono';
import { getCookie, setCookie, deleteCookie } from 'hono/cookie';
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { bearerToken, sameSecret, sha256Hex } from '../security.js';
import { clientPrefix, requestAddress, socketAddress } from './client-address.js';
import { ApiError } from './errors.js';

export const SESSION_COOKIE = 'invoiceiq_session';
export const LINK_TTL_MS = 15 * 60 * 1000;
export const SESSION_TTL_MS = 12 * 60 * 60 * 1000;

export type Viewer = { kind: 'admin' } | { kind: 'merchant'; merchantId: string; phone: string; businessName: string };


/** A fixed-window counter of failed sign-ins per address (per instance). */
export function createFailureLimiter(limit = 20, windowMs = 60_000, now: () => number = Date.now) {
  const windows = new Map<string, { start: number; count: number }>();
  return {
    blocked(key: string): boolean {
      const w = windows.get(key);
      return w !== undefined && now() - w.start < windowMs && w.count >= limit;
    },
    fail(key: string): void {
      const t = now();
      const w = windows.get(key);
      if (w === undefined || t - w.start >= windowMs) {
        // Bounded memory under a spray of addresses: ended windows go; a blocked address is
        // never forgotten early (clearing them all would unblock it). Full of live windows, a
        // new address is not counted until some end.
        if (windows.size >= 10_000) {
          for (const [k, v] of windows) if (t - v.start >= windowMs) windows.delete(k);
          if (windows.size >= 10_000 && w === undefined) return;
        }
        windows.set(key, { start: t, count: 1 });
      } else {
        w.count += 1;
      }
    },
  };
}
export type FailureLimiter = ReturnType<typeof createFailureLimiter>;

/**
 * The limiter's key: the caller's address as the network says it (a client cannot dodge the
 * limit by inventing Fly-Client-IP values). Without a socket (in-process requests) the header
 * is all there is.
 */
export function callerKey(c: Context): string {
  const address = (socketAddress(c) === undefined ? c.req.header('fly-client-ip') : requestAddress(c)) ?? 'local';
  // An IPv6 client counts once for its whole /64, or it could rotate past the limit.
  return clientPrefix(address);
}

/**
 * What an admin session stores of the token that opened it: an HMAC keyed by the token (the
 * token itself is never stored). A rotated or removed token ends the sessions it opened.
 */
export function adminKey(statsToken: string): string {
  return createHmac('sha256', statsToken).update('invoiceiq dashboard admin session').digest('hex');
}

export type AuthDeps = { db: Kysely<Database>; statsToken: string | undefined; secureCookies: boolean; limiter: FailureLimiter; now?: () => Date };

export function createAuth(deps: AuthDeps) {
  const now = deps.now ?? (() => new Date());

  async function sessionViewer(token: string): Promise<Viewer | null> {
    const row = await deps.db
      .selectFrom('dashboard_sessions')
      .leftJoin('merchants', 'merchants.id', 'dashboard_sessions.merchant_id')
      .select(['dashboard_sessions.merchant_id', 'dashboard_sessions.admin_key', 'dashboard_sessions.expires_at', 'merchants.phone', 'merchants.business_name'])
      .where('dashboard_sessions.token_hash', '=', sha256Hex(token))
      .executeTakeFirst();
    if (row === undefined || row.expires_at.getTime() <= now().getTime()) return null;
    if (row.merchant_id === null) {
      // Only while the token that opened it is still the admin token.
      const valid = deps.statsToken !== undefined && row.admin_key !== null && sameSecret(row.admin_key, adminKey(deps.statsToken));
      return valid ? { kind: 'admin' } : null;
    }
    return { kind: 'merchant', merchantId: row.merchant_id, phone: row.phone ?? '', businessName: row.business_name ?? '' };
  }

  async function openSession(c: Context, merchantId: string | null): Promise<void> {
    const token = randomBytes(32).toString('base64url');
    await deps.db
      .insertInto('dashboard_sessions')
      .values({
        token_hash: sha256Hex(token),
        merchant_id: merchantId,
        admin_key: merchantId === null && deps.statsToken !== undefined ? adminKey(deps.statsToken) : null,
        expires_at: new Date(now().getTime() + SESSION_TTL_MS),
      })
      .execute();
    setCookie(c, SESSION_COOKIE, token, { httpOnly: true, secure: deps.secureCookies, sameSite: 'Lax', path: '/', maxAge: SESSION_TTL_MS / 1000 });
  }

  return {
    /** Failed sign-ins per address, shared by every route that checks a credential. */
    limiter: deps.limiter,
    /** The viewer behind a request, or null. Never throws for a bad credential. */
    async viewer(c: Context): Promise<Viewer | null> {
      const header = c.req.header('authorization');
      if (header !== undefined) {
        const token = bearerToken(header);
        return token !== undefined && deps.statsToken !== undefined && sameSecret(token, deps.statsToken) ? { kind: 'admin' } : null;
      }
      const cookie = getCookie(c, SESSION_COOKIE);
      return cookie === undefined || cookie.length > 200 ? null : sessionViewer(cookie);
    },
    /** The viewer, or a 401 (429 when this address has failed too often). */
    async require(c: Context): Promise<Viewer> {
      const key = callerKey(c);
      if (deps.limiter.blocked(key)) throw new ApiError(429, 'too_many_attempts', 'Too many failed attempts; try again in a minute.');
      const viewer = await this.viewer(c);
      if (viewer === null) {
        deps.limiter.fail(key);
        throw new ApiError(401, 'unauthorized', 'A valid Authorization: Bearer token or dashboard session is required.');
      }
      return viewer;
    },
    /** Creates a single-use sign-in link token for a merchant (inside the caller's transaction or not). */
    async createLink(db: Kysely<Database>, merchantId: string): Promise<string> {
      const token = randomBytes(32).toString('base64url');
      await db.insertInto('dashboard_links').values({ token_hash: sha256Hex(token), merchant_id: merchantId, expires_at: new Date(now().getTime() + LINK_TTL_MS) }).execute();
      return token;
    },
    /** Uses a link (once, before it expires) and opens a merchant session. */
    async signInWithLink(c: Context, token: string): Promise<boolean> {
      const used = await deps.db
        .updateTable('dashboard_links')
        .set({ used_at: now() })
        .where('token_hash', '=', sha256Hex(token))
        .where('used_at', 'is', null)
        .where('expires_at', '>', now())
        .returning('merchant_id')
        .executeTakeFirst();
      if (used === undefined) return false;
      await openSession(c, used.merchant_id);
      return true;
    },
    async signInAsAdmin(c: Context, token: string): Promise<boolean> {
      if (deps.statsToken === undefined || !sameSecret(token, deps.statsToken)) return false;
      await openSession(c, null);
      return true;
    },
    async signOut(c: Context): Promise<void> {
      const cookie = getCookie(c, SESSION_COOKIE);
      if (cookie !== undefined) await deps.db.deleteFrom('dashboard_sessions').where('token_hash', '=', sha256Hex(cookie)).execute();
      deleteCookie(c, SESSION_COOKIE, { path: '/' });
    },
    /**
     * Ends every session of the cookie's owner, this one included: all of a merchant's (a
     * sign-in link forwarded, a phone left signed in), or every admin session. Only a live
     * session (as sessionViewer reads it) can do it; without one nothing is ended.
     */
    async signOutEverywhere(c: Context): Promise<void> {
      const cookie = getCookie(c, SESSION_COOKIE);
      deleteCookie(c, SESSION_COOKIE, { path: '/' });
      const owner = cookie === undefined || cookie.length > 200 ? null : await sessionViewer(cookie);
      if (owner === null) return;
      await deps.db
        .deleteFrom('dashboard_sessions')
        .where((eb) => (owner.kind === 'admin' ? eb('merchant_id', 'is', null) : eb('merchant_id', '=', owner.merchantId)))
        .execute();
    },
  };
}

export type Auth = ReturnType<typeof createAuth>;
