/**
 * The dashboard: one mobile-first HTML page that draws the merchant's (or, for the admin,
 * any merchant's) figures from the /stats JSON API with Chart.js, plus its sign-in routes.
 *
 * - `GET /dashboard`: the page for a signed-in viewer; without a session, the admin's
 *   sign-in form (merchants sign in from the link the bot sends on WhatsApp).
 * - `GET /dashboard/login?link=`: uses a merchant's single-use link, then 303 /dashboard;
 *   a used, expired or unknown link is a 401 page saying how to get a new one.
 * - `POST /dashboard/login` (form field `token` = STATS_API_TOKEN): the admin's sign-in.
 * - `POST /dashboard/logout`: ends the session.
 * - `POST /dashboard/logout-everywhere`: ends every session of the same merchant (or every
 *   admin session), on every device.
 * - `GET /dashboard/assets/:name`: the page's script and style and Chart.js's UMD build,
 *   from an explicit allow-list, gzipped when the client accepts it, cached for a year
 *   (the page links them with a content hash).
 *
 * No CDN and no web fonts: everything the page loads comes from this app.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Hono, type Context } from 'hono';
import { html } from 'hono/html';
import type { Deps } from '../deps.js';
import { formatPhone } from '../domain/parse.js';
import { createAssetStore, CSS, JS, pageCsp, type AssetEntry } from './assets.js';
import { getCookie } from 'hono/cookie';
import { callerKey, LINK_TTL_MS, SESSION_COOKIE, type Viewer } from './auth.js';
import type { AppEnv } from './middleware.js';

/** The page's own files: next to this module as src/http/dashboard/assets (tsx) or dist/src/http/dashboard/assets (compiled, copied by `npm run postbuild`). */
const OWN_ASSETS = new URL('./dashboard/assets/', import.meta.url);

/** Chart.js's UMD build, wherever npm installed the package (its `exports` hide dist/, so go through the main entry). */
function chartJsUmd(): string {
  return join(dirname(createRequire(import.meta.url).resolve('chart.js')), 'chart.umd.js');
}

/** Every file /dashboard/assets/ serves. */
const ALLOW_LIST: Readonly<Record<string, AssetEntry>> = {
  'dashboard.js': { path: () => fileURLToPath(new URL('dashboard.js', OWN_ASSETS)), contentType: JS },
  'dashboard.css': { path: () => fileURLToPath(new URL('dashboard.css', OWN_ASSETS)), contentType: CSS },
  'chart.umd.js': { path: chartJsUmd, contentType: JS },
};

/** Pages: same-origin everything, no inline script or style, no framing. */
const PAGE_CSP = pageCsp("'self'");

/** Link-preview fetchers (WhatsApp's own among them) must not use up a single-use link. */
const PREVIEW_FETCHER = /^(WhatsApp\/|facebookexternalhit\/|Facebot|meta-externalagent\/|TelegramBot|Twitterbot\/|Slackbot|LinkedInBot\/|Discordbot\/|SkypeUriPreview)/i;


export function dashboardRoutes(deps: Pick<Deps, 'auth' | 'config'>): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  const assets = createAssetStore('/dashboard/assets/', ALLOW_LIST);
  const { limiter } = deps.auth;
  const assetUrl = assets.url;
  const adminConfigured = deps.config.stats.apiToken !== undefined;

  function layout(title: string, body: unknown, options: { bodyAttributes?: unknown; scripts?: boolean } = {}) {
    return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<meta name="theme-color" content="#0f766e">
<title>${title} · InvoiceIQ</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${assetUrl('dashboard.css')}">
${options.scripts === true ? html`<script defer src="${assetUrl('chart.umd.js')}"></script>
<script defer src="${assetUrl('dashboard.js')}"></script>` : ''}
</head>
<body ${options.bodyAttributes ?? ''}>
${body}
</body>
</html>
`;
  }

  /** Every page: never cached (it may name a merchant), locked down by CSP. */
  function page(c: Context<AppEnv>, content: ReturnType<typeof layout>, status: 200 | 401 | 403 | 429) {
    c.header('Cache-Control', 'no-store');
    c.header('Content-Security-Policy', PAGE_CSP);
    return c.html(content, status);
  }

  function signInPage(c: Context<AppEnv>, status: 200 | 401 | 429, error?: string) {
    const form = adminConfigured
      ? html`<form method="post" action="/dashboard/login" class="stack">
  <label for="token">Admin token</label>
  <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
  <button type="submit">Sign in</button>
</form>`
      : html`<p>Admin sign-in is not set up on this server (STATS_API_TOKEN is not set).</p>`;
    return page(
      c,
      layout(
        'Sign in',
        html`<main class="narrow">
<h1 class="brand">InvoiceIQ</h1>
<section class="panel">
<h2>Admin sign-in</h2>
${error === undefined ? '' : html`<p class="error" role="alert">${error}</p>`}
${form}
</section>
<p class="hint">Merchants: send <strong>dashboard</strong> to InvoiceIQ on WhatsApp to get your personal sign-in link.</p>
</main>`,
        { bodyAttributes: html`class="signin"` },
      ),
      status,
    );
  }

  function messagePage(c: Context<AppEnv>, status: 200 | 401 | 403 | 429, title: string, lines: unknown) {
    return page(
      c,
      layout(title, html`<main class="narrow">
<h1 class="brand">InvoiceIQ</h1>
<section class="panel">
<h2>${title}</h2>
${lines}
</section>
</main>`),
      status,
    );
  }

  function dashboardPage(c: Context<AppEnv>, viewer: Viewer) {
    const who = viewer.kind === 'admin' ? 'All merchants' : viewer.businessName || formatPhone(viewer.phone);
    const merchantPicker =
      viewer.kind === 'admin'
        ? html`<label class="field merchant">Merchant
<select id="merchant" name="merchant"><option value="">All merchants</option></select>
</label>`
        : '';
    const card = (id: string, label: string, sub: string) =>
      html`<div class="card"><h2>${label}</h2><p class="value" id="fig-${id}">–</p><p class="sub" id="sub-${id}">${sub}</p></div>`;
    const status = (key: string, label: string) =>
      html`<li data-status="${key}"><span class="swatch s-${key}"></span><span class="label">${label}</span><b id="count-${key}">–</b></li>`;
    return page(
      c,
      layout(
        'Dashboard',
        html`<header class="top">
<div class="title"><span class="brand">InvoiceIQ</span><span class="who" id="who">${who}</span></div>
<form method="post" action="/dashboard/logout"><button type="submit" class="quiet">Sign out</button></form>
</header>
<main>
<form id="filters" class="filters" method="get" action="/dashboard">
<label class="field">Period
<select id="preset">
<option value="7">Last 7 days</option>
<option value="30" selected>Last 30 days</option>
<option value="90">Last 90 days</option>
<option value="month">This month</option>
<option value="last-month">Last month</option>
<option value="custom">Custom dates</option>
</select>
</label>
<div class="range">
<label class="field">From <input type="date" id="from" name="from" required></label>
<label class="field">To <input type="date" id="to" name="to" required></label>
<button type="submit" id="apply">Show</button>
</div>
${merchantPicker}
</form>
<p id="status" class="status" role="status" aria-live="polite">Loading…</p>
<section class="cards" aria-label="Figures">
${card('total', 'Invoices', 'created in the period')}
${card('collected', 'Collected', 'paid invoices')}
${card('outstanding', 'Outstanding', 'unpaid invoices')}
${card('conversion', 'Conversion', 'of sent invoices were paid')}
${card('time', 'Time to pay', 'average, sent to paid')}
</section>
<div class="charts">
<section class="panel">
<h2>Invoices sent and paid per day</h2>
<div class="chart"><canvas id="chart-daily" role="img" aria-label="Invoices sent and paid per day"></canvas></div>
</section>
<section class="panel">
<h2>Amount collected per day</h2>
<div class="chart"><canvas id="chart-collected" role="img" aria-label="Amount collected per day, in KES"></canvas></div>
</section>
<section class="panel">
<h2>Status of invoices</h2>
<div class="status-box">
<div class="chart small"><canvas id="chart-status" role="img" aria-label="Invoices by status"></canvas></div>
<ul class="legend" id="status-list">
${status('paid', 'Paid')}
${status('sent', 'Sent')}
${status('pending', 'Pending')}
${status('failed', 'Failed')}
${status('cancelled', 'Cancelled')}
</ul>
</div>
</section>
</div>
<noscript><p class="error">This page needs JavaScript to show your figures.</p></noscript>
<form class="everywhere" method="post" action="/dashboard/logout-everywhere">
<p class="hint">Signed in on a phone or computer you no longer use, or shared a sign-in link by mistake?</p>
<button type="submit" class="secondary">Sign out everywhere</button>
</form>
</main>`,
        { scripts: true, bodyAttributes: html`class="dash" data-viewer="${viewer.kind}" data-state="loading"` },
      ),
      200,
    );
  }

  /** A browser marks a form posted from another site; those never sign anyone in or out. */
  const crossSite = (c: Context<AppEnv>) => c.req.header('sec-fetch-site') === 'cross-site';

  routes.get('/dashboard', async (c) => {
    // A credential offered here (a bearer token, a session cookie) is a sign-in attempt like
    // any other: failures count towards the same per-address limit.
    const key = callerKey(c);
    if (limiter.blocked(key)) return signInPage(c, 429, 'Too many failed attempts. Wait a minute, then try again.');
    const viewer = await deps.auth.viewer(c);
    if (viewer !== null) return dashboardPage(c, viewer);
    if (c.req.header('authorization') !== undefined || getCookie(c, SESSION_COOKIE) !== undefined) limiter.fail(key);
    return signInPage(c, 200);
  });
  routes.get('/dashboard/', (c) => c.redirect('/dashboard', 301));

  /** A sign-in link used (or refused): the session and the dashboard, or the expired page. */
  async function useLink(c: Context<AppEnv>, link: string, key: string) {
    if (link !== '' && link.length <= 200 && (await deps.auth.signInWithLink(c, link))) {
      c.header('Cache-Control', 'no-store');
      return c.redirect('/dashboard', 303);
    }
    limiter.fail(key);
    return messagePage(
      c,
      401,
      'This link has expired',
      html`<p>This sign-in link has expired or was already used. Each link works once, for ${LINK_TTL_MS / 60_000} minutes.</p>
<p>Ask for a new one: type <strong>dashboard</strong> on WhatsApp.</p>`,
    );
  }

  routes.get('/dashboard/login', async (c) => {
    const link = c.req.query('link') ?? '';
    // A link checker's HEAD and a chat app's preview fetch must never use up a single-use link.
    if (c.req.method === 'HEAD' || PREVIEW_FETCHER.test(c.req.header('user-agent') ?? '')) {
      return messagePage(c, 200, 'Dashboard sign-in', html`<p>Open this link on your phone to see your InvoiceIQ dashboard.</p>`);
    }
    const key = callerKey(c);
    if (limiter.blocked(key)) {
      return messagePage(c, 429, 'Too many attempts', html`<p>Too many failed sign-ins from here. Wait a minute, then try again.</p>`);
    }
    // Sent here by another site's page (with a link of its own, say, to sign the browser in as
    // somebody else): nothing happens until the person confirms on this site. A link tapped in
    // WhatsApp or typed opens with no site (Sec-Fetch-Site: none) and signs in at once.
    const site = c.req.header('sec-fetch-site');
    if ((site === 'cross-site' || site === 'same-site') && link !== '' && link.length <= 200) {
      c.header('Cache-Control', 'no-store');
      return messagePage(
        c,
        200,
        'Dashboard sign-in',
        html`<p>Sign in to your InvoiceIQ dashboard?</p>
<form method="post" action="/dashboard/login"><input type="hidden" name="link" value="${link}"><button type="submit">Sign in</button></form>`,
      );
    }
    return useLink(c, link, key);
  });

  routes.post('/dashboard/login', async (c) => {
    if (crossSite(c)) return messagePage(c, 403, 'Not allowed', html`<p>Sign in from the InvoiceIQ page itself.</p>`);
    const key = callerKey(c);
    if (limiter.blocked(key)) return signInPage(c, 429, 'Too many failed attempts. Wait a minute, then try again.');
    // A body that does not read (a broken multipart, say) is a failed attempt like a wrong token, not a 500.
    const form = await c.req.parseBody().catch(() => ({}) as Record<string, unknown>);
    // The confirmation of a link opened from another site (above): posted from this origin only
    // (a sibling subdomain is same-site, and must not sign a browser in with its own link).
    if (typeof form.link === 'string') {
      if (c.req.header('sec-fetch-site') === 'same-site') return messagePage(c, 403, 'Not allowed', html`<p>Sign in from the InvoiceIQ page itself.</p>`);
      return useLink(c, form.link.trim(), key);
    }
    const token = typeof form.token === 'string' ? form.token.trim() : '';
    if (token === '' || token.length > 1024 || !(await deps.auth.signInAsAdmin(c, token))) {
      limiter.fail(key);
      return signInPage(c, 401, 'That token is not right. Check it and try again.');
    }
    c.header('Cache-Control', 'no-store');
    return c.redirect('/dashboard', 303);
  });

  routes.post('/dashboard/logout', async (c) => {
    if (crossSite(c)) return messagePage(c, 403, 'Not allowed', html`<p>Sign out from the InvoiceIQ page itself.</p>`);
    await deps.auth.signOut(c);
    c.header('Cache-Control', 'no-store');
    return c.redirect('/dashboard', 303);
  });

  routes.post('/dashboard/logout-everywhere', async (c) => {
    if (crossSite(c)) return messagePage(c, 403, 'Not allowed', html`<p>Sign out from the InvoiceIQ page itself.</p>`);
    await deps.auth.signOutEverywhere(c);
    c.header('Cache-Control', 'no-store');
    return c.redirect('/dashboard', 303);
  });

  routes.get('/dashboard/assets/:name', (c) => assets.serve(c, c.req.param('name')));

  return routes;
}
