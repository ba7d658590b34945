/**
 * The dashboard in a real browser (Debian's chromium driven by playwright-core) against the
 * real app over HTTP on 127.0.0.1: the admin signs in with the token, sees the figures the
 * seed implies (computed here, without SQL), switches the period and the merchant; a
 * merchant opens their WhatsApp link in a fresh context on a 360x640 phone and sees only
 * their own figures. Every request outside 127.0.0.1 is blocked and must not happen.
 * Screenshots: test-artifacts/dashboard.png (admin) and test-artifacts/dashboard-mobile.png.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { serve, type ServerType } from '@hono/node-server';
import { sql } from 'kysely';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import type { InvoiceStatus } from '../src/db/schema.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { buildDashboardApp, type DashboardApp } from './helpers/dashboard.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
const missingChromium = !existsSync(CHROMIUM);
// In CI a missing browser is a failure (.ci/run installs it), elsewhere a skip with the fix.
const skip = missingChromium && process.env.CI !== 'true' ? `${CHROMIUM} is missing: apt-get install -y chromium` : false;

const TOKEN = 'browser-token-0123456789abcdef0123456789';
const NOW = new Date('2026-11-22T09:00:00.000Z'); // 12:00 in Nairobi
const A = { phone: '254711300001', name: 'Mama Mboga' };
const B = { phone: '254711300002', name: 'Duka Bora' };
const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url));

// ---- the seed, and the figures it implies (the README's definitions, no SQL) ----

type Seed = { merchant: string; status: InvoiceStatus; amount: number; created: Date; sent: Date | null; paid: Date | null; due: string };

function seedRows(): Seed[] {
  const daysAgo = [0, 1, 2, 3, 4, 6, 8, 9, 12, 15, 19, 24, 28, 33, 41, 55, 70];
  const statuses: InvoiceStatus[] = ['paid', 'sent', 'pending', 'paid', 'failed', 'cancelled', 'paid', 'sent', 'paid'];
  const rows: Seed[] = [];
  for (let i = 0; i < 54; i += 1) {
    const status = statuses[i % statuses.length]!;
    const created = new Date(NOW.getTime() - daysAgo[i % daysAgo.length]! * 86_400_000 - (4 + (i % 4)) * 3_600_000);
    const sent = status === 'pending' ? null : new Date(created.getTime() + 5 * 60_000);
    const paid = status === 'paid' ? new Date(sent!.getTime() + (10 + (i % 6) * 40) * 60_000) : null;
    const due = new Date(created.getTime() + (i % 3 === 0 ? 2 : 9) * 86_400_000).toISOString().slice(0, 10);
    rows.push({ merchant: i % 4 === 0 ? B.phone : A.phone, status, amount: 250 * (i + 1) + (i % 7) * 1000, created, sent, paid, due });
  }
  return rows;
}

const nairobiDay = (at: Date) => new Date(at.getTime() + 3 * 3_600_000).toISOString().slice(0, 10);
const addDays = (day: string, n: number) => new Date(Date.parse(`${day}T00:00:00Z`) + n * 86_400_000).toISOString().slice(0, 10);

function expectedSummary(rows: Seed[], from: string, to: string, merchant: string | null) {
  const today = nairobiDay(NOW);
  const mine = rows.filter((r) => (merchant === null || r.merchant === merchant) && nairobiDay(r.created) >= from && nairobiDay(r.created) <= to);
  const count = (s: InvoiceStatus) => mine.filter((r) => r.status === s).length;
  const unpaid = mine.filter((r) => r.status === 'pending' || r.status === 'sent' || r.status === 'failed');
  const sent = mine.filter((r) => r.sent !== null);
  const paidAfterSent = sent.filter((r) => r.status === 'paid');
  const waits = paidAfterSent.map((r) => (r.paid!.getTime() - r.sent!.getTime()) / 1000);
  const sum = (xs: Seed[]) => xs.reduce((n, r) => n + r.amount, 0);
  return {
    total: mine.length,
    statuses: { paid: count('paid'), sent: count('sent'), pending: count('pending'), failed: count('failed'), cancelled: count('cancelled') },
    overdue: unpaid.filter((r) => r.due < today).length,
    conversion: sent.length === 0 ? 0 : Math.round((paidAfterSent.length / sent.length) * 1000) / 10,
    averageSeconds: waits.length === 0 ? null : Math.round(waits.reduce((a, b) => a + b, 0) / waits.length),
    invoiced: sum(mine.filter((r) => r.status !== 'cancelled')),
    collected: sum(mine.filter((r) => r.status === 'paid')),
    outstanding: sum(unpaid),
  };
}

function expectedDaily(rows: Seed[], from: string, to: string, merchant: string | null) {
  const mine = rows.filter((r) => merchant === null || r.merchant === merchant);
  const days: Array<{ day: string; sent: number; paid: number; collected: number }> = [];
  for (let day = from; day <= to; day = addDays(day, 1)) {
    const paid = mine.filter((r) => r.status === 'paid' && nairobiDay(r.paid!) === day);
    days.push({
      day,
      sent: mine.filter((r) => r.sent !== null && nairobiDay(r.sent) === day).length,
      paid: paid.length,
      collected: paid.reduce((n, r) => n + r.amount, 0),
    });
  }
  return days;
}

// How the page writes figures: 'KES 12,345', '33.3%', '2 h 15 min'.
const kes = (n: number) => `KES ${n.toLocaleString('en-US')}`;
function duration(seconds: number | null): string {
  if (seconds === null) return '–';
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  if (seconds < 86_400) return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  const hours = Math.round(seconds / 3600);
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

// ---- the app over HTTP and the browser ----

let database: TestDatabase;
let t: DashboardApp;
let server: ServerType;
let base: string;
let profile: string;
let admin: BrowserContext;
const rows = seedRows();
const merchantIds = new Map<string, string>();
/** Requests to anywhere but the app (blocked); must stay empty. */
const escaped: string[] = [];
/** Console errors and uncaught exceptions (CSP violations land here too); must stay empty. */
const pageErrors: string[] = [];

before(async () => {
  if (skip !== false) return;
  database = await createTestDatabase();
  t = buildDashboardApp(database, { env: { STATS_API_TOKEN: TOKEN }, now: () => NOW });
  const db = database.handle.db;
  for (const m of [A, B]) {
    const row = await sql<{ id: string }>`insert into merchants (phone, business_name) values (${m.phone}, ${m.name}) returning id`.execute(db);
    merchantIds.set(m.phone, row.rows[0]!.id);
  }
  let number = 0;
  for (const r of rows) {
    number += 1;
    await sql`insert into invoices (merchant_id, number, customer_phone, amount, description, status, created_at, sent_at, paid_at, due_date)
      values (${merchantIds.get(r.merchant)!}, ${number}, '254722000000', ${r.amount}, 'seed', ${r.status}, ${r.created}, ${r.sent}, ${r.paid}, ${r.due})`.execute(db);
  }

  const port = await new Promise<number>((resolve) => {
    server = serve({ fetch: t.app.fetch, hostname: '127.0.0.1', port: 0 }, (info: AddressInfo) => resolve(info.port));
  });
  base = `http://127.0.0.1:${port}`;

  profile = mkdtempSync(join(tmpdir(), 'invoiceiq-chromium-'));
  admin = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, viewport: { width: 1280, height: 900 } });
  await guard(admin);
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  if (skip !== false) return;
  await admin?.close();
  await new Promise<void>((resolve) => (server === undefined ? resolve() : server.close(() => resolve())));
  await database?.dispose();
  if (profile !== undefined) rmSync(profile, { recursive: true, force: true });
});

/** Lets through only requests to the app; records everything else (the page must work offline). */
async function guard(context: BrowserContext): Promise<void> {
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.protocol === 'data:' || (url.hostname === '127.0.0.1' && url.origin === base)) return route.continue();
    escaped.push(url.toString());
    return route.abort();
  });
  context.on('page', watch);
}

function watch(page: Page): void {
  page.on('console', (message) => {
    if (message.type() === 'error') pageErrors.push(`${page.url()}: ${message.text()}`);
  });
  page.on('pageerror', (error) => pageErrors.push(`${page.url()}: ${error.message}`));
}

/** Waits until the page has drawn this period (and merchant). */
async function loaded(page: Page, from: string, to: string, merchant = ''): Promise<void> {
  await page.waitForSelector(`body[data-state="ready"][data-loaded="${from}..${to}|${merchant}"]`, { timeout: 15_000 });
}

type ChartData = { labels: string[]; datasets: Array<{ label: string; data: number[] }> };
async function chartData(page: Page, id: string): Promise<ChartData> {
  const json = await page.evaluate(`JSON.stringify((({ labels, datasets }) => ({ labels, datasets: datasets.map((d) => ({ label: d.label, data: d.data })) }))(Chart.getChart(${JSON.stringify(id)}).data))`);
  return JSON.parse(String(json)) as ChartData;
}

async function figure(page: Page, id: string): Promise<{ text: string; value: string }> {
  const node = page.locator(`#fig-${id}`);
  return { text: (await node.textContent()) ?? '', value: (await node.getAttribute('data-value')) ?? '' };
}

/** The cards, the status list and all three charts show exactly what the seed implies. */
async function assertFigures(page: Page, from: string, to: string, merchant: string | null): Promise<void> {
  const e = expectedSummary(rows, from, to, merchant);
  const where = `${from}..${to} ${merchant ?? 'all'}`;
  assert.deepEqual(await figure(page, 'total'), { text: String(e.total), value: String(e.total) }, where);
  assert.deepEqual(await figure(page, 'collected'), { text: kes(e.collected), value: String(e.collected) }, where);
  assert.deepEqual(await figure(page, 'outstanding'), { text: kes(e.outstanding), value: String(e.outstanding) }, where);
  assert.deepEqual(await figure(page, 'conversion'), { text: `${e.conversion}%`, value: String(e.conversion) }, where);
  assert.deepEqual(await figure(page, 'time'), { text: duration(e.averageSeconds), value: e.averageSeconds === null ? '' : String(e.averageSeconds) }, where);
  assert.equal(await page.locator('#sub-total').textContent(), `${kes(e.invoiced)} invoiced`, where);
  assert.equal(await page.locator('#sub-collected').textContent(), `${e.statuses.paid} paid`, where);
  assert.equal(await page.locator('#sub-outstanding').textContent(), `${e.overdue} overdue`, where);
  for (const [status, n] of Object.entries(e.statuses)) assert.equal(await page.locator(`#count-${status}`).textContent(), String(n), `${where} ${status}`);

  const days = expectedDaily(rows, from, to, merchant);
  const daily = await chartData(page, 'chart-daily');
  assert.equal(daily.labels.length, days.length, where);
  assert.equal(daily.labels.at(-1), `${Number(to.slice(8))} ${new Date(`${to}T00:00:00Z`).toLocaleString('en-GB', { month: 'short', timeZone: 'UTC' })}`);
  assert.deepEqual(daily.datasets, [
    { label: 'Sent', data: days.map((d) => d.sent) },
    { label: 'Paid', data: days.map((d) => d.paid) },
  ], where);
  assert.deepEqual((await chartData(page, 'chart-collected')).datasets, [{ label: 'Collected', data: days.map((d) => d.collected) }], where);
  const status = await chartData(page, 'chart-status');
  assert.deepEqual(status.labels, ['Paid', 'Sent', 'Pending', 'Failed', 'Cancelled']);
  assert.deepEqual(status.datasets[0]!.data, [e.statuses.paid, e.statuses.sent, e.statuses.pending, e.statuses.failed, e.statuses.cancelled], where);
}

test('the seed makes every period and merchant below show different figures', { skip }, () => {
  const today = nairobiDay(NOW);
  const periods = [[addDays(today, -29), today], [addDays(today, -6), today], ['2026-09-01', today]] as const;
  const totals = periods.map(([from, to]) => expectedSummary(rows, from, to, null).total);
  assert.equal(new Set(totals).size, totals.length, String(totals));
  assert.notDeepEqual(expectedSummary(rows, periods[0][0], today, A.phone), expectedSummary(rows, periods[0][0], today, B.phone));
  for (const [from, to] of periods) assert.ok(expectedSummary(rows, from, to, null).averageSeconds! > 3600, 'the duration shows hours');
});

test('admin: signs in with the token, sees the figures, switches period and merchant', { skip, timeout: 120_000 }, async () => {
  const page = await admin.newPage();
  const today = nairobiDay(NOW);

  await page.goto(`${base}/dashboard`);
  assert.equal(await page.locator('h2').first().textContent(), 'Admin sign-in');
  await page.fill('#token', 'not-the-token');
  await Promise.all([page.waitForURL(`${base}/dashboard/login`), page.click('button[type="submit"]')]);
  assert.match((await page.locator('.error').textContent()) ?? '', /not right/);

  await page.fill('#token', TOKEN);
  await Promise.all([page.waitForURL(`${base}/dashboard`), page.click('button[type="submit"]')]);
  const cookies = await admin.cookies(base);
  const session = cookies.find((c) => c.name === 'invoiceiq_session');
  assert.ok(session !== undefined && session.httpOnly && session.sameSite === 'Lax', JSON.stringify(cookies));

  // The default period: the last 30 days by the server's clock.
  const from30 = addDays(today, -29);
  await loaded(page, from30, today);
  assert.equal(await page.locator('#preset').inputValue(), '30');
  assert.equal(await page.locator('#from').inputValue(), from30);
  assert.equal(await page.locator('#to').inputValue(), today);
  assert.equal(await page.locator('#who').textContent(), 'All merchants');
  await assertFigures(page, from30, today, null);
  assert.equal(new URL(page.url()).search, `?from=${from30}&to=${today}`);

  // The period picker: last 7 days.
  const total30 = (await figure(page, 'total')).text;
  await page.selectOption('#preset', '7');
  await loaded(page, addDays(today, -6), today);
  assert.notEqual((await figure(page, 'total')).text, total30, 'the numbers changed');
  await assertFigures(page, addDays(today, -6), today, null);

  // Custom dates.
  await page.fill('#from', '2026-09-01');
  assert.equal(await page.locator('#preset').inputValue(), 'custom');
  await page.click('#apply');
  await loaded(page, '2026-09-01', today);
  await assertFigures(page, '2026-09-01', today, null);

  // The merchant picker lists both merchants; choosing one shows that merchant only.
  const options = await page.locator('#merchant option').allTextContents();
  assert.deepEqual(options, ['All merchants', 'Duka Bora · 0711 300 002', 'Mama Mboga · 0711 300 001']);
  await page.selectOption('#merchant', B.phone);
  await loaded(page, '2026-09-01', today, B.phone);
  await assertFigures(page, '2026-09-01', today, B.phone);
  assert.match((await page.locator('#status').textContent()) ?? '', /^Duka Bora · 0711 300 002: 1 Sep 2026 to 22 Nov 2026$/);

  // A reload keeps the choice (it lives in the address).
  await page.reload();
  await loaded(page, '2026-09-01', today, B.phone);
  assert.equal(await page.locator('#merchant').inputValue(), B.phone);

  await page.selectOption('#merchant', '');
  await page.selectOption('#preset', '30');
  await loaded(page, from30, today);
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });

  // Sign out: back to the form; the session no longer opens the API.
  await Promise.all([page.waitForURL(`${base}/dashboard`), page.click('text=Sign out')]);
  assert.equal(await page.locator('h2').first().textContent(), 'Admin sign-in');
  assert.equal((await admin.cookies(base)).some((c) => c.name === 'invoiceiq_session'), false);
  await page.close();
});

test('merchant: a WhatsApp link in a fresh context on a 360x640 phone shows their own figures only', { skip, timeout: 120_000 }, async () => {
  const browser = admin.browser();
  assert.ok(browser !== null);
  const phone = await browser.newContext({ viewport: { width: 360, height: 640 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  try {
    await guard(phone);
    const page = await phone.newPage();
    const today = nairobiDay(NOW);
    const link = await t.deps.auth.createLink(database.handle.db, merchantIds.get(A.phone)!);
    await page.goto(`${base}/dashboard/login?link=${link}`);
    assert.equal(new URL(page.url()).pathname, '/dashboard');
    await loaded(page, addDays(today, -29), today);

    assert.equal(await page.locator('#who').textContent(), A.name);
    assert.equal(await page.locator('#merchant').count(), 0, 'no merchant picker');
    await assertFigures(page, addDays(today, -29), today, A.phone);
    assert.notEqual((await figure(page, 'total')).value, String(expectedSummary(rows, addDays(today, -29), today, null).total));

    // Fits the phone: nothing wider than the screen, the figures and charts are on the page.
    assert.equal(await page.evaluate('document.documentElement.scrollWidth'), 360);
    for (const id of ['#fig-total', '#fig-collected', '#fig-outstanding', '#fig-conversion', '#fig-time']) {
      const box = await page.locator(id).boundingBox();
      assert.ok(box !== null && box.x >= 0 && box.x + box.width <= 360, `${id} ${JSON.stringify(box)}`);
    }
    for (const id of ['#chart-daily', '#chart-collected', '#chart-status']) {
      const box = await page.locator(id).boundingBox();
      assert.ok(box !== null && box.width > 250 && box.width <= 360 && box.height > 100, `${id} ${JSON.stringify(box)}`);
    }
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-mobile.png'), fullPage: true });

    // Their own figures in another period too; asking the API for someone else is refused.
    await page.selectOption('#preset', '90');
    await loaded(page, addDays(today, -89), today);
    await assertFigures(page, addDays(today, -89), today, A.phone);
    assert.equal((await page.request.get(`${base}/stats/summary?merchant=${B.phone}`)).status(), 403);
    assert.equal((await page.request.get(`${base}/stats/merchants`)).status(), 403);

    // The link worked once.
    const again = await page.goto(`${base}/dashboard/login?link=${link}`);
    assert.equal(again?.status(), 401);
    assert.match((await page.locator('main').textContent()) ?? '', /type dashboard on WhatsApp/);
  } finally {
    await phone.close();
  }
});

test('nothing was fetched from outside the app and no page logged an error', { skip }, () => {
  assert.deepEqual(escaped, []);
  // The wrong-token form post is a 401 the browser logs; the used link's 401 page too. Nothing else.
  const unexpected = pageErrors.filter((e) => !/the server responded with a status of 401/.test(e));
  assert.deepEqual(unexpected, []);
  assert.ok(existsSync(join(ARTIFACTS, 'dashboard.png')));
});
