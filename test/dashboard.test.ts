/**
 * The dashboard over HTTP (no browser): sign-in form, admin and link sign-in, cookies,
 * logout, the asset allow-list, and that nothing served points at another host.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { SESSION_COOKIE } from '../src/http/auth.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { buildDashboardApp, cookiePair, type DashboardApp } from './helpers/dashboard.js';
import { productionEnv } from './helpers/app.js';

const TOKEN = 'dashboard-token-0123456789abcdef0123456789';
const MERCHANT_PHONE = '254711200001';
const OTHER_PHONE = '254711200002';

let clock = Date.parse('2026-11-22T09:00:00.000Z');
let database: TestDatabase;
let t: DashboardApp;
let merchantId: string;

before(async () => {
  database = await createTestDatabase();
  t = buildDashboardApp(database, { env: { STATS_API_TOKEN: TOKEN }, now: () => new Date(clock) });
  const db = database.handle.db;
  merchantId = (await db.insertInto('merchants').values({ phone: MERCHANT_PHONE, business_name: 'Mama <Mboga> & Sons' }).returning('id').executeTakeFirstOrThrow()).id;
  await db.insertInto('merchants').values({ phone: OTHER_PHONE, business_name: 'Other Shop' }).execute();
});
after(() => database.dispose());

/** Each test its own address, so the failure limiter of one never blocks another. */
let address = 0;
const from = () => ({ 'fly-client-ip': `198.51.100.${(address += 1)}` });

const get = (path: string, headers: Record<string, string> = {}) => t.app.request(path, { headers: { ...from(), ...headers } });
const postForm = (app: DashboardApp['app'], path: string, fields: Record<string, string>, headers: Record<string, string> = {}) =>
  app.request(path, { method: 'POST', body: new URLSearchParams(fields), headers: { ...from(), ...headers } });

async function adminCookie(): Promise<string> {
  const res = await postForm(t.app, '/dashboard/login', { token: TOKEN });
  assert.equal(res.status, 303);
  return cookiePair(res.headers.get('set-cookie'));
}

async function linkCookie(): Promise<string> {
  const link = await t.deps.auth.createLink(database.handle.db, merchantId);
  const res = await get(`/dashboard/login?link=${link}`);
  assert.equal(res.status, 303);
  return cookiePair(res.headers.get('set-cookie'));
}

describe('without a session', () => {
  test('GET /dashboard shows the admin sign-in form (200), not cached, no scripts', async () => {
    const res = await get('/dashboard');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const page = await res.text();
    assert.match(page, /<form method="post" action="\/dashboard\/login"/);
    assert.match(page, /<input id="token" name="token" type="password"/);
    assert.match(page, /type <strong>dashboard<\/strong>|send <strong>dashboard<\/strong>/);
    assert.doesNotMatch(page, /<script/);
    assert.equal(res.headers.get('set-cookie'), null);
  });

  test('the stats API still refuses the request (401)', async () => {
    assert.equal((await get('/stats/summary')).status, 401);
  });

  test('/dashboard/ redirects to /dashboard', async () => {
    const res = await get('/dashboard/');
    assert.equal(res.status, 301);
    assert.equal(res.headers.get('location'), '/dashboard');
  });
});

describe('admin sign-in', () => {
  test('the right token: 303 to /dashboard with an HttpOnly, SameSite=Lax session cookie (not Secure in development)', async () => {
    const res = await postForm(t.app, '/dashboard/login', { token: TOKEN });
    assert.equal(res.status, 303);
    assert.equal(res.headers.get('location'), '/dashboard');
    const cookie = res.headers.get('set-cookie') ?? '';
    assert.match(cookie, new RegExp(`^${SESSION_COOKIE}=[A-Za-z0-9_-]{40,};`));
    assert.match(cookie, /; HttpOnly/);
    assert.match(cookie, /; SameSite=Lax/);
    assert.match(cookie, /; Path=\//);
    assert.doesNotMatch(cookie, /; Secure/);
    assert.ok(!cookie.includes(TOKEN), 'the session is not the token');

    const page = await get('/dashboard', { cookie: cookiePair(cookie) });
    assert.equal(page.status, 200);
    const body = await page.text();
    assert.match(body, /data-viewer="admin"/);
    assert.match(body, /<select id="merchant" name="merchant">/);
    assert.match(body, /All merchants/);
    assert.match(body, /<script defer src="\/dashboard\/assets\/chart\.umd\.js\?v=[0-9a-f]{16}"><\/script>/);
    assert.match(body, /<script defer src="\/dashboard\/assets\/dashboard\.js\?v=[0-9a-f]{16}"><\/script>/);
    assert.match(body, /<link rel="stylesheet" href="\/dashboard\/assets\/dashboard\.css\?v=[0-9a-f]{16}">/);
    assert.equal((await get('/stats/summary', { cookie: cookiePair(cookie) })).status, 200);
    assert.equal((await get('/stats/merchants', { cookie: cookiePair(cookie) })).status, 200);
  });

  test('APP_ENV=production: the cookie is also Secure', async () => {
    const production = buildDashboardApp(database, { env: productionEnv(TOKEN) });
    const res = await postForm(production.app, '/dashboard/login', { token: TOKEN });
    assert.equal(res.status, 303);
    const cookie = res.headers.get('set-cookie') ?? '';
    assert.match(cookie, /; HttpOnly/);
    assert.match(cookie, /; SameSite=Lax/);
    assert.match(cookie, /; Secure/);
  });

  test('a wrong or empty token: 401 with the form and an error, no cookie', async () => {
    for (const token of ['wrong', '', `${TOKEN}x`]) {
      const res = await postForm(t.app, '/dashboard/login', { token });
      assert.equal(res.status, 401, token);
      assert.equal(res.headers.get('set-cookie'), null);
      const page = await res.text();
      assert.match(page, /role="alert">That token is not right/);
      assert.match(page, /<input id="token" name="token"/);
    }
  });

  test('a body that does not read (a broken multipart) is a failed sign-in (401 with the form), not a 500, and counts towards the limit', async () => {
    const headers = { 'fly-client-ip': '203.0.113.60', 'content-type': 'multipart/form-data; boundary=zz' };
    for (let i = 0; i < 20; i += 1) {
      const res = await t.app.request('/dashboard/login', { method: 'POST', headers, body: '--zz\r\nbroken' });
      assert.equal(res.status, 401);
      assert.equal(res.headers.get('set-cookie'), null);
    }
    assert.equal((await postForm(t.app, '/dashboard/login', { token: TOKEN }, { 'fly-client-ip': '203.0.113.60' })).status, 429);
  });

  test('repeated failures from one address are rate-limited (429), even with the right token; other addresses are not', async () => {
    const headers = { 'fly-client-ip': '203.0.113.50' };
    for (let i = 0; i < 20; i += 1) assert.equal((await postForm(t.app, '/dashboard/login', { token: 'guess' }, headers)).status, 401);
    const blocked = await postForm(t.app, '/dashboard/login', { token: TOKEN }, headers);
    assert.equal(blocked.status, 429);
    assert.equal(blocked.headers.get('set-cookie'), null);
    assert.match(await blocked.text(), /Too many failed attempts/);
    assert.equal((await postForm(t.app, '/dashboard/login', { token: TOKEN }, { 'fly-client-ip': '203.0.113.51' })).status, 303);
  });

  test('credentials guessed at GET /dashboard (bearer tokens, session cookies) count as failed sign-ins: 429 after 20, even for the right token', async () => {
    // The page tells a right token from a wrong one (dashboard vs sign-in form): unlimited, it
    // would be an oracle for the admin token.
    for (const guess of [(i: number) => ({ authorization: `Bearer guess-${i}` }), (i: number) => ({ cookie: `invoiceiq_session=guess-${i}` })]) {
      const headers = from();
      for (let i = 0; i < 20; i += 1) {
        const res = await t.app.request('/dashboard', { headers: { ...headers, ...guess(i) } });
        assert.equal(res.status, 200);
        assert.match(await res.text(), /name="token"/);
      }
      const blocked = await t.app.request('/dashboard', { headers: { ...headers, authorization: `Bearer ${TOKEN}` } });
      assert.equal(blocked.status, 429);
      assert.match(await blocked.text(), /Too many failed attempts/);
    }
    // Visiting without any credential is not a failure.
    const headers = from();
    for (let i = 0; i < 25; i += 1) assert.equal((await t.app.request('/dashboard', { headers })).status, 200);
  });

  test('an admin session ends when STATS_API_TOKEN is rotated or removed (it names the token that opened it, as an HMAC)', async () => {
    const cookie = await adminCookie();
    assert.equal((await get('/stats/summary', { cookie })).status, 200);
    const stored = await database.handle.db.selectFrom('dashboard_sessions').select('admin_key').where('merchant_id', 'is', null).execute();
    assert.ok(stored.length > 0 && stored.every((row) => row.admin_key !== null && !row.admin_key.includes(TOKEN)));
    const rotated = buildDashboardApp(database, { env: { STATS_API_TOKEN: 'rotated-token-0123456789abcdef0123456789' }, now: () => new Date(clock) });
    assert.equal((await rotated.app.request('/stats/summary', { headers: { ...from(), cookie } })).status, 401);
    const off = buildDashboardApp(database, { now: () => new Date(clock) });
    assert.equal((await off.app.request('/stats/summary', { headers: { ...from(), cookie } })).status, 401);
    // The same token again (a restart): the session holds.
    const again = buildDashboardApp(database, { env: { STATS_API_TOKEN: TOKEN }, now: () => new Date(clock) });
    assert.equal((await again.app.request('/stats/summary', { headers: { ...from(), cookie } })).status, 200);
  });

  test('a form posted from another site (Sec-Fetch-Site: cross-site) is refused', async () => {
    const res = await postForm(t.app, '/dashboard/login', { token: TOKEN }, { 'sec-fetch-site': 'cross-site' });
    assert.equal(res.status, 403);
    assert.equal(res.headers.get('set-cookie'), null);
  });
});

describe('merchant link', () => {
  test('a link signs the merchant in once: their own page, no merchant picker; the second use is a 401 page', async () => {
    const link = await t.deps.auth.createLink(database.handle.db, merchantId);
    const first = await get(`/dashboard/login?link=${link}`);
    assert.equal(first.status, 303);
    assert.equal(first.headers.get('location'), '/dashboard');
    const cookie = first.headers.get('set-cookie') ?? '';
    assert.match(cookie, /; HttpOnly/);
    assert.match(cookie, /; SameSite=Lax/);

    const page = await get('/dashboard', { cookie: cookiePair(cookie) });
    const body = await page.text();
    assert.match(body, /data-viewer="merchant"/);
    assert.match(body, /Mama &lt;Mboga&gt; &amp; Sons/, 'the name is escaped');
    assert.doesNotMatch(body, /id="merchant"/);
    assert.doesNotMatch(body, /All merchants/);
    assert.equal((await get('/stats/merchants', { cookie: cookiePair(cookie) })).status, 403);
    assert.equal((await get(`/stats/summary?merchant=${OTHER_PHONE}`, { cookie: cookiePair(cookie) })).status, 403);

    const second = await get(`/dashboard/login?link=${link}`);
    assert.equal(second.status, 401);
    assert.equal(second.headers.get('set-cookie'), null);
    const text = await second.text();
    assert.match(text, /expired or was already used/);
    assert.match(text, /type <strong>dashboard<\/strong> on WhatsApp/);
  });

  test('an expired link (after 15 minutes) is a 401 page', async () => {
    const link = await t.deps.auth.createLink(database.handle.db, merchantId);
    clock += 16 * 60_000;
    const res = await get(`/dashboard/login?link=${link}`);
    assert.equal(res.status, 401);
    assert.match(await res.text(), /This link has expired/);
  });

  test('an unknown, missing or absurd link is a 401 page', async () => {
    for (const query of ['?link=not-a-real-link', '', '?link=', `?link=${'x'.repeat(500)}`]) {
      const res = await get(`/dashboard/login${query}`);
      assert.equal(res.status, 401, query);
      assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    }
  });

  test("WhatsApp's link preview fetch does not use up the link", async () => {
    const link = await t.deps.auth.createLink(database.handle.db, merchantId);
    const preview = await get(`/dashboard/login?link=${link}`, { 'user-agent': 'WhatsApp/2.23.20.0 A' });
    assert.equal(preview.status, 200);
    assert.equal(preview.headers.get('set-cookie'), null);
    assert.equal((await get(`/dashboard/login?link=${link}`, { 'user-agent': 'Mozilla/5.0 (Linux; Android 10; K) Chrome/120.0 Mobile Safari/537.36' })).status, 303);
  });
});

describe('sign-in links that are not opened by the person (found by a review)', () => {
  test('a HEAD (a link checker) does not use up the link', async () => {
    const link = await t.deps.auth.createLink(database.handle.db, merchantId);
    const head = await t.app.request(`/dashboard/login?link=${link}`, { method: 'HEAD', headers: from() });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('set-cookie'), null);
    assert.equal((await get(`/dashboard/login?link=${link}`)).status, 303);
  });

  test('opened from another site\'s page, a link signs nobody in until the person confirms on this site', async () => {
    const cookie = await adminCookie();
    const link = await t.deps.auth.createLink(database.handle.db, merchantId);
    for (const site of ['cross-site', 'same-site']) {
      const res = await get(`/dashboard/login?link=${link}`, { cookie, 'sec-fetch-site': site });
      assert.equal(res.status, 200, site);
      assert.equal(res.headers.get('set-cookie'), null, 'the session the browser had stays');
      const page = await res.text();
      assert.match(page, /<form method="post" action="\/dashboard\/login"><input type="hidden" name="link" value="[A-Za-z0-9_-]+">/);
    }
    // Still the admin: the link was not used.
    assert.equal((await get('/stats/summary', { cookie })).status, 200);
    // The form posted from another site is refused; from this site it signs in, once.
    assert.equal((await postForm(t.app, '/dashboard/login', { link }, { 'sec-fetch-site': 'cross-site' })).status, 403);
    assert.equal((await postForm(t.app, '/dashboard/login', { link }, { 'sec-fetch-site': 'same-site' })).status, 403, 'a sibling subdomain either');
    const confirmed = await postForm(t.app, '/dashboard/login', { link }, { 'sec-fetch-site': 'same-origin' });
    assert.equal(confirmed.status, 303);
    assert.notEqual(confirmed.headers.get('set-cookie'), null);
    assert.equal((await postForm(t.app, '/dashboard/login', { link }, { 'sec-fetch-site': 'same-origin' })).status, 401);
  });

  test('a tap in WhatsApp (no site) or a typed link signs in at once, as before', async () => {
    const link = await t.deps.auth.createLink(database.handle.db, merchantId);
    assert.equal((await get(`/dashboard/login?link=${link}`, { 'sec-fetch-site': 'none' })).status, 303);
  });
});

describe('logout', () => {
  test('POST /dashboard/logout ends the session: cookie cleared, 303 /dashboard, the old cookie no longer works', async () => {
    for (const cookie of [await adminCookie(), await linkCookie()]) {
      assert.equal((await get('/stats/summary', { cookie })).status, 200);
      const res = await postForm(t.app, '/dashboard/logout', {}, { cookie });
      assert.equal(res.status, 303);
      assert.equal(res.headers.get('location'), '/dashboard');
      assert.match(res.headers.get('set-cookie') ?? '', new RegExp(`^${SESSION_COOKIE}=; Max-Age=0; Path=/`));
      assert.equal((await get('/stats/summary', { cookie })).status, 401, 'the session is gone on the server too');
      const page = await get('/dashboard', { cookie });
      assert.match(await page.text(), /Admin sign-in/);
    }
  });

  test('without a session it still lands on /dashboard', async () => {
    const res = await postForm(t.app, '/dashboard/logout', {});
    assert.equal(res.status, 303);
    assert.equal(res.headers.get('location'), '/dashboard');
  });
});

describe('sign out everywhere', () => {
  test("ends every session of the merchant (a forwarded link's too), and no one else's", async () => {
    const [phone, laptop, forwarded] = [await linkCookie(), await linkCookie(), await linkCookie()];
    const admin = await adminCookie();
    const otherId = (await database.handle.db.selectFrom('merchants').select('id').where('phone', '=', OTHER_PHONE).executeTakeFirstOrThrow()).id;
    const otherLink = await t.deps.auth.createLink(database.handle.db, otherId);
    const other = cookiePair((await get(`/dashboard/login?link=${otherLink}`)).headers.get('set-cookie'));
    const page = await (await get('/dashboard', { cookie: phone })).text();
    assert.match(page, /<form class="everywhere" method="post" action="\/dashboard\/logout-everywhere">/, 'the page offers it');

    const res = await postForm(t.app, '/dashboard/logout-everywhere', {}, { cookie: phone });
    assert.equal(res.status, 303);
    assert.equal(res.headers.get('location'), '/dashboard');
    assert.match(res.headers.get('set-cookie') ?? '', new RegExp(`^${SESSION_COOKIE}=; Max-Age=0; Path=/`));
    for (const cookie of [phone, laptop, forwarded]) assert.equal((await get('/stats/summary', { cookie })).status, 401, 'every session of the merchant ended');
    assert.equal((await get('/stats/summary', { cookie: other })).status, 200, "another merchant's session stays");
    assert.equal((await get('/stats/summary', { cookie: admin })).status, 200, "the admin's session stays");
  });

  test("from an admin session: every admin session ends, merchants' stay", async () => {
    const [one, two] = [await adminCookie(), await adminCookie()];
    const merchant = await linkCookie();
    assert.equal((await postForm(t.app, '/dashboard/logout-everywhere', {}, { cookie: one })).status, 303);
    for (const cookie of [one, two]) assert.equal((await get('/stats/summary', { cookie })).status, 401);
    assert.equal((await get('/stats/summary', { cookie: merchant })).status, 200);
  });

  test('without a live session it ends nothing; from another site it is refused', async () => {
    const kept = await linkCookie();
    for (const cookie of [undefined, `${SESSION_COOKIE}=not-a-session`]) {
      const res = await postForm(t.app, '/dashboard/logout-everywhere', {}, cookie === undefined ? {} : { cookie });
      assert.equal(res.status, 303);
    }
    const crossSite = await postForm(t.app, '/dashboard/logout-everywhere', {}, { cookie: kept, 'sec-fetch-site': 'cross-site' });
    assert.equal(crossSite.status, 403);
    assert.equal((await get('/stats/summary', { cookie: kept })).status, 200, 'still signed in');
  });

  test('an expired session cannot end the others', async () => {
    const stale = await linkCookie();
    clock += 13 * 60 * 60 * 1000;
    try {
      const fresh = await linkCookie();
      assert.equal((await postForm(t.app, '/dashboard/logout-everywhere', {}, { cookie: stale })).status, 303);
      assert.equal((await get('/stats/summary', { cookie: fresh })).status, 200);
    } finally {
      clock -= 13 * 60 * 60 * 1000;
    }
  });
});

describe('assets', () => {
  const assets = [
    ['dashboard.js', 'text/javascript; charset=utf-8'],
    ['dashboard.css', 'text/css; charset=utf-8'],
    ['chart.umd.js', 'text/javascript; charset=utf-8'],
  ] as const;

  for (const [name, type] of assets) {
    test(`${name}: ${type}, cached for a year, gzipped on request`, async () => {
      const plain = await get(`/dashboard/assets/${name}`);
      assert.equal(plain.status, 200);
      assert.equal(plain.headers.get('content-type'), type);
      assert.equal(plain.headers.get('cache-control'), 'public, max-age=31536000, immutable');
      assert.equal(plain.headers.get('content-encoding'), null);
      const bytes = Buffer.from(await plain.arrayBuffer());
      assert.ok(bytes.length > 500);

      const zipped = await get(`/dashboard/assets/${name}`, { 'accept-encoding': 'gzip, deflate, br' });
      assert.equal(zipped.headers.get('content-encoding'), 'gzip');
      assert.equal(zipped.headers.get('vary'), 'Accept-Encoding');
      const compressed = Buffer.from(await zipped.arrayBuffer());
      assert.ok(compressed.length < bytes.length);
      assert.deepEqual(gunzipSync(compressed), bytes);

      const etag = plain.headers.get('etag');
      assert.ok(etag !== null);
      assert.equal((await get(`/dashboard/assets/${name}`, { 'if-none-match': etag })).status, 304);
    });
  }

  test('chart.umd.js is the Chart.js UMD build from node_modules', async () => {
    const text = await (await get('/dashboard/assets/chart.umd.js')).text();
    assert.match(text, /^\/\*!\n \* Chart\.js v4\./);
    assert.match(text, /window\.Chart=/);
  });

  test('anything not on the allow-list is a 404, traversal included', async () => {
    for (const path of [
      '/dashboard/assets/unknown.js',
      '/dashboard/assets/dashboard.ts',
      '/dashboard/assets/chart.umd.js.map',
      '/dashboard/assets/..%2F..%2Fdashboard.ts',
      '/dashboard/assets/..%2f..%2f..%2f..%2fpackage.json',
      '/dashboard/assets/%2e%2e/%2e%2e/auth.ts',
      '/dashboard/assets/__proto__',
      '/dashboard/assets/constructor',
      '/dashboard/assets/',
      '/dashboard/assets/dashboard.js/',
    ]) {
      const res = await get(path);
      assert.equal(res.status, 404, path);
      assert.doesNotMatch(res.headers.get('content-type') ?? '', /javascript|css/, path);
    }
  });
});

describe('no other host', () => {
  const external = /\b(?:https?:)?\/\/[a-z0-9.-]+\.[a-z]{2,}/i;

  test('the pages (sign-in, admin, merchant, expired link) and our own script and style name no external URL', async () => {
    const pages = [
      await (await get('/dashboard')).text(),
      await (await get('/dashboard', { cookie: await adminCookie() })).text(),
      await (await get('/dashboard', { cookie: await linkCookie() })).text(),
      await (await get('/dashboard/login?link=nope')).text(),
      await (await get('/dashboard/assets/dashboard.js')).text(),
      await (await get('/dashboard/assets/dashboard.css')).text(),
    ];
    for (const text of pages) {
      assert.doesNotMatch(text, /https?:\/\//);
      assert.doesNotMatch(text, external);
      assert.doesNotMatch(text, /@import|url\(|fonts\.googleapis|cdn/i);
    }
  });

  test('Chart.js as served: its only URLs are in its licence banner comment, nothing it would load', async () => {
    const text = await (await get('/dashboard/assets/chart.umd.js')).text();
    const banners = text.match(/\/\*![\s\S]*?\*\//g) ?? [];
    const withoutBanners = banners.reduce((rest, banner) => rest.replace(banner, ''), text);
    assert.doesNotMatch(withoutBanners, /https?:\/\//);
  });

  test('pages carry a same-origin-only Content-Security-Policy', async () => {
    const res = await get('/dashboard', { cookie: await adminCookie() });
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /connect-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /https?:|unsafe/);
  });
});
