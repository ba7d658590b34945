/**
 * GET /stats/summary (and /stats/daily, /stats/merchants) on both databases: credentials,
 * parameter errors, and figures compared with counts computed independently from the seed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { InvoiceStatus } from '../src/db/schema.js';
import { buildTestApp, type TestApp } from './helpers/app.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';

const TOKEN = 'stats-token-0123456789abcdef0123456789';
const NOW = new Date('2026-11-22T09:00:00.000Z'); // 12:00 in Nairobi
const A = '254711100001';
const B = '254711100002';
const EMPTY = '254711100003';

type Seed = { merchant: string; status: InvoiceStatus; amount: number; created: string; sent: string | null; paid: string | null; due: string | null };

/** Deterministic invoices over three weeks, two merchants, every status. */
function seedRows(): Seed[] {
  const rows: Seed[] = [];
  const statuses: InvoiceStatus[] = ['pending', 'sent', 'paid', 'failed', 'cancelled', 'paid', 'sent'];
  for (let i = 0; i < 60; i += 1) {
    const merchant = i % 3 === 0 ? B : A;
    const status = statuses[i % statuses.length]!;
    const createdMs = Date.parse('2026-11-01T05:00:00Z') + i * 8 * 3_600_000 + (i % 5) * 1_800_000;
    const created = new Date(createdMs).toISOString();
    const sent = status === 'pending' ? null : new Date(createdMs + 60_000).toISOString();
    const paid = status === 'paid' ? new Date(createdMs + 60_000 + (i + 1) * 600_000).toISOString() : null;
    const due = new Date(createdMs + 7 * 86_400_000 + 3 * 3_600_000).toISOString().slice(0, 10);
    rows.push({ merchant, status, amount: 100 * (i + 1), created, sent, paid, due });
  }
  return rows;
}

const nairobiDay = (iso: string) => new Date(Date.parse(iso) + 3 * 3_600_000).toISOString().slice(0, 10);

/** The figures, computed here without SQL, as the README defines them. */
function expected(rows: Seed[], from: string, to: string, merchant: string | null) {
  const today = nairobiDay(NOW.toISOString());
  const inPeriod = rows.filter((r) => nairobiDay(r.created) >= from && nairobiDay(r.created) <= to && (merchant === null || r.merchant === merchant));
  const count = (s: InvoiceStatus) => inPeriod.filter((r) => r.status === s).length;
  const unpaid = inPeriod.filter((r) => r.status === 'pending' || r.status === 'sent' || r.status === 'failed');
  const sent = inPeriod.filter((r) => r.sent !== null);
  const paidSent = sent.filter((r) => r.status === 'paid');
  const times = paidSent.map((r) => (Date.parse(r.paid!) - Date.parse(r.sent!)) / 1000);
  const sum = (xs: Seed[]) => xs.reduce((n, r) => n + r.amount, 0);
  return {
    invoice_stats: {
      total: inPeriod.length,
      pending: count('pending'),
      sent: count('sent'),
      paid: count('paid'),
      failed: count('failed'),
      cancelled: count('cancelled'),
      overdue: unpaid.filter((r) => r.due !== null && r.due < today).length,
    },
    conversion_rate: sent.length === 0 ? 0 : Math.round((paidSent.length / sent.length) * 1000) / 10,
    average_payment_time_seconds: times.length === 0 ? null : Math.round(times.reduce((a, b) => a + b, 0) / times.length),
    amounts: { currency: 'KES', invoiced: sum(inPeriod.filter((r) => r.status !== 'cancelled')), collected: sum(inPeriod.filter((r) => r.status === 'paid')), outstanding: sum(unpaid) },
    period: { from, to },
    generated_at: NOW.toISOString(),
  };
}

let database: TestDatabase;
let t: TestApp;
const rows = seedRows();
const ids = new Map<string, string>();

before(async () => {
  database = await createTestDatabase();
  t = buildTestApp(database, { env: { STATS_API_TOKEN: TOKEN }, now: () => NOW });
  for (const [phone, name] of [[A, 'Alpha'], [B, 'Beta'], [EMPTY, 'Empty']] as const) {
    const row = await database.handle.db.insertInto('merchants').values({ phone, business_name: name }).returning('id').executeTakeFirstOrThrow();
    ids.set(phone, row.id);
  }
  let number = 0;
  for (const r of rows) {
    number += 1;
    await database.handle.db
      .insertInto('invoices')
      .values({
        merchant_id: ids.get(r.merchant)!,
        number,
        customer_phone: '254722000000',
        amount: r.amount,
        description: 'seed',
        status: r.status,
        created_at: new Date(r.created),
        sent_at: r.sent,
        paid_at: r.paid,
        due_date: r.due,
      })
      .execute();
  }
});
after(() => database.dispose());

const admin = { authorization: `Bearer ${TOKEN}` };
async function get(path: string, headers: Record<string, string> = admin) {
  return t.app.request(path, { headers });
}

describe('credentials', () => {
  test('no credential, a wrong token or a malformed header: 401', async () => {
    const offers: Array<Record<string, string>> = [{}, { authorization: 'Bearer nope' }, { authorization: TOKEN }, { authorization: `Basic ${TOKEN}` }, { cookie: 'invoiceiq_session=forged' }];
    for (const headers of offers) {
      const res = await get('/stats/summary', { ...headers, 'fly-client-ip': '203.0.113.1' });
      assert.equal(res.status, 401, JSON.stringify(headers));
      assert.equal(((await res.json()) as { code: string }).code, 'unauthorized');
    }
  });
  test('repeated failures from one address are rate-limited (429), others are not', async () => {
    const headers = { authorization: 'Bearer wrong', 'fly-client-ip': '203.0.113.99' };
    for (let i = 0; i < 20; i += 1) await get('/stats/summary', headers);
    assert.equal((await get('/stats/summary', headers)).status, 429);
    assert.equal((await get('/stats/summary', { ...admin, 'fly-client-ip': '203.0.113.98' })).status, 200);
  });
});

describe('parameters', () => {
  for (const [query, parameter] of [
    ['from=2026-13-01', 'from'],
    ['from=yesterday', 'from'],
    ['to=2026-02-30', 'to'],
    ['from=2026-11-20&to=2026-11-01', 'from'],
    ['merchant=12345', 'merchant'],
    // The database stores no year 0 (it was a 500).
    ['from=0000-01-01&to=0000-01-02', 'from'],
    // Past 9999 a day's ISO form changes shape: the daily series never reached `to` and hung the process.
    ['from=9999-12-31&to=9999-12-31', 'from'],
    ['from=2026-11-01&to=9999-12-31', 'to'],
  ] as const) {
    test(`${query} -> 400 naming ${parameter}, on the summary and the daily series`, async () => {
      const daily = await get(`/stats/daily?${query}`);
      assert.equal(daily.status, 400);
      assert.ok(((await daily.json()) as { message: string }).message.startsWith(`${parameter}:`));
      const res = await get(`/stats/summary?${query}`);
      assert.equal(res.status, 400);
      const body = (await res.json()) as { message: string };
      assert.ok(body.message.startsWith(`${parameter}:`), body.message);
    });
  }
});

describe('figures', () => {
  const periods: Array<[string, string]> = [
    ['2026-11-01', '2026-11-22'],
    ['2026-11-05', '2026-11-09'],
    ['2026-11-20', '2026-11-20'],
    ['2026-10-01', '2026-10-31'], // empty
  ];
  for (const [from, to] of periods) {
    test(`all merchants, ${from}..${to}`, async () => {
      const res = await get(`/stats/summary?from=${from}&to=${to}`);
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), expected(rows, from, to, null));
    });
    test(`one merchant (any spelling), ${from}..${to}`, async () => {
      for (const spelling of ['0711 100 001', '+254711100001']) {
        const res = await get(`/stats/summary?from=${from}&to=${to}&merchant=${encodeURIComponent(spelling)}`);
        assert.deepEqual(await res.json(), expected(rows, from, to, A));
      }
    });
  }
  test('a merchant with nothing, and an unknown merchant, show zeros', async () => {
    for (const phone of [EMPTY, '254799999999']) {
      const body = (await (await get(`/stats/summary?from=2026-11-01&to=2026-11-22&merchant=${phone}`)).json()) as { invoice_stats: { total: number }; average_payment_time_seconds: number | null; conversion_rate: number };
      assert.equal(body.invoice_stats.total, 0);
      assert.equal(body.average_payment_time_seconds, null);
      assert.equal(body.conversion_rate, 0);
    }
  });
  test('the default period is the last 30 Nairobi days', async () => {
    const body = (await (await get('/stats/summary')).json()) as { period: { from: string; to: string } };
    assert.deepEqual(body.period, { from: '2026-10-24', to: '2026-11-22' });
  });
  test('daily series: sent by sending day, paid and collected by paying day', async () => {
    const body = (await (await get('/stats/daily?from=2026-11-01&to=2026-11-22')).json()) as { days: Array<{ day: string; sent: number; paid: number; collected: number }> };
    assert.equal(body.days.length, 22);
    for (const point of body.days) {
      assert.equal(point.sent, rows.filter((r) => r.sent !== null && nairobiDay(r.sent) === point.day).length, point.day);
      const paid = rows.filter((r) => r.paid !== null && nairobiDay(r.paid) === point.day);
      assert.equal(point.paid, paid.length, point.day);
      assert.equal(point.collected, paid.reduce((n, r) => n + r.amount, 0), point.day);
    }
  });
});

describe('merchant sessions', () => {
  test("a merchant's session sees that merchant only; another merchant is a 403; the merchant list is admin-only", async () => {
    const { deps } = t;
    const token = await deps.auth.createLink(database.handle.db, ids.get(A)!);
    const signIn = new (await import('hono')).Hono();
    signIn.get('/in', async (c) => ((await deps.auth.signInWithLink(c, token)) ? c.text('ok') : c.text('no', 401)));
    const res = await signIn.request('/in');
    assert.equal(res.status, 200);
    const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0]!;
    assert.match(res.headers.get('set-cookie') ?? '', /HttpOnly/i);
    assert.match(res.headers.get('set-cookie') ?? '', /SameSite=Lax/i);
    const own = await get('/stats/summary?from=2026-11-01&to=2026-11-22', { cookie });
    assert.deepEqual(await own.json(), expected(rows, '2026-11-01', '2026-11-22', A));
    assert.equal((await get(`/stats/summary?merchant=${B}`, { cookie })).status, 403);
    assert.equal((await get('/stats/merchants', { cookie })).status, 403);
    assert.equal((await signIn.request('/in')).status, 401, 'a link works once');
    const list = (await (await get('/stats/merchants')).json()) as { merchants: Array<{ phone: string }> };
    assert.deepEqual(list.merchants.map((m) => m.phone).sort(), [A, B, EMPTY].sort());
  });
});
