/**
 * Security edges found in review (each test failed on the code before its fix): the failed
 * sign-in limiter counts an IPv6 client once per /64 and never forgets a blocked address
 * early; PUBLIC_BASE_URL (sign-in links) must be https in production; /metrics is not served
 * through Fly's public edge, and needs METRICS_TOKEN when that is set.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../src/config.js';
import { clientPrefix } from '../src/http/client-address.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { buildDashboardApp, type DashboardApp } from './helpers/dashboard.js';
import { buildTestApp, productionEnv } from './helpers/app.js';

const TOKEN = 'review-token-0123456789abcdef0123456789';

const PRODUCTION = productionEnv(TOKEN);

/** What @hono/node-server hands the app as c.env: the request's socket. */
const socket = (remoteAddress: string) => ({ incoming: { socket: { remoteAddress } } });

/** Fly's edge proxy, as the app sees it: a private address. */
const FLY_PROXY = '172.16.7.2';

let database: TestDatabase;
let t: DashboardApp;

before(async () => {
  database = await createTestDatabase();
  t = buildDashboardApp(database, { env: { STATS_API_TOKEN: TOKEN } });
});
after(() => database.dispose());

const wrongBearer = (headers: Record<string, string>, env: object) =>
  t.app.request('/stats/summary', { headers: { authorization: 'Bearer wrong-guess', ...headers } }, env);

describe('rate limiting of failed credentials', () => {
  test('IPv6: one client rotating addresses inside its own /64 is still limited after 20 failures', async () => {
    // A single host (any VPS, any home IPv6 line) owns at least a /64: 2^64 addresses.
    const statuses: number[] = [];
    for (let i = 1; i <= 25; i += 1) {
      const res = await wrongBearer({ 'fly-client-ip': `2001:db8:42:7::${i.toString(16)}` }, socket(FLY_PROXY));
      statuses.push(res.status);
    }
    assert.equal(statuses.slice(0, 20).every((s) => s === 401), true);
    assert.deepEqual(statuses.slice(20), [429, 429, 429, 429, 429], 'addresses of one /64 must share one failure counter');
  });

  test('a blocked address stays blocked when 10,001 other addresses fail (the limiter must not forget everyone at once)', async () => {
    const attacker = { 'fly-client-ip': '198.51.100.77' };
    for (let i = 0; i < 20; i += 1) assert.equal((await wrongBearer(attacker, socket(FLY_PROXY))).status, 401);
    assert.equal((await wrongBearer(attacker, socket(FLY_PROXY))).status, 429, 'blocked after 20 failures');
    // One failure from each of 10,001 other addresses (distinct /64s: cheap for anyone with a /48).
    for (let i = 0; i < 10_001; i += 1) await wrongBearer({ 'fly-client-ip': `2001:db8:99:${i.toString(16)}::1` }, socket(FLY_PROXY));
    const res = await t.app.request('/dashboard/login', { method: 'POST', body: new URLSearchParams({ token: 'next-guess' }), headers: attacker }, socket(FLY_PROXY));
    assert.equal(res.status, 429, 'the attacker is still within its blocked minute');
  });
});

describe('production configuration', () => {
  test('PUBLIC_BASE_URL must be https in production (it carries the single-use sign-in token)', () => {
    assert.throws(() => loadConfig({ ...PRODUCTION, PUBLIC_BASE_URL: 'http://invoiceiq.example' }), /PUBLIC_BASE_URL/);
  });

  test('MPESA_ENVIRONMENT must be said in production (its default, the sandbox, moves no money), and the provider hosts must be https (tokens travel there) (found by a security review)', () => {
    const { MPESA_ENVIRONMENT: _said, ...unsaid } = PRODUCTION;
    assert.throws(() => loadConfig(unsaid), (error: Error) => /MPESA_ENVIRONMENT is required when APP_ENV=production/.test(error.message));
    assert.equal(loadConfig({ ...PRODUCTION, MPESA_ENVIRONMENT: 'production' }).mpesa.environment, 'production');
    assert.equal(loadConfig({ ...PRODUCTION, MPESA_ENVIRONMENT: 'sandbox' }).mpesa.environment, 'sandbox');
    assert.equal(loadConfig({}).mpesa.environment, 'sandbox', 'development keeps the sandbox default');
    for (const name of ['WABA_API_BASE_URL', 'MPESA_API_BASE_URL']) {
      assert.throws(() => loadConfig({ ...PRODUCTION, [name]: 'http://graph.example' }), new RegExp(`${name} must be https in production`));
      assert.doesNotThrow(() => loadConfig({ ...PRODUCTION, [name]: 'https://graph.example' }));
      assert.doesNotThrow(() => loadConfig({ [name]: 'http://127.0.0.1:9999' }), 'development may use a local fake');
    }
  });

  test('GET /metrics is not served to the public internet in production (payment and message volumes)', async () => {
    const prod = buildTestApp(database, { env: PRODUCTION });
    prod.deps.metrics.paymentAttempts.inc({ outcome: 'succeeded' }, 3);
    // Anyone on the internet, through Fly's edge (https://<app>.fly.dev/metrics): the proxy adds Fly-Client-IP.
    const res = await prod.app.request('/metrics', { headers: { 'fly-client-ip': '203.0.113.9' } }, socket(FLY_PROXY));
    const body = await res.text();
    assert.notEqual(res.status, 200, `public GET /metrics answered 200 and shows e.g. ${body.split('\n').find((l) => l.startsWith('invoiceiq_payment_attempts_total{'))}`);
  });

  test('without METRICS_TOKEN, /metrics is not served off Fly either: not to a public address, nor through a proxy (found by a review)', async () => {
    const prod = buildTestApp(database, { env: PRODUCTION });
    prod.deps.metrics.paymentAttempts.inc({ outcome: 'succeeded' }, 3);
    const direct = await prod.app.request('/metrics', {}, socket('203.0.113.5'));
    assert.equal(direct.status, 404, 'a VM with a public address');
    const relayed = await prod.app.request('/metrics', { headers: { 'x-forwarded-for': '203.0.113.5' } }, socket('10.0.0.9'));
    assert.equal(relayed.status, 404, 'through a proxy on a private network (Docker, Kubernetes)');
    for (const res of [direct, relayed]) assert.doesNotMatch(await res.text(), /invoiceiq_payment_attempts_total/);
    // Fly's scraper (its private network, IPv6), and a local call: served.
    assert.equal((await prod.app.request('/metrics', {}, socket('fdaa:0:1:a7b:1::2'))).status, 200);
    assert.equal((await prod.app.request('/metrics', {}, socket('::ffff:127.0.0.1'))).status, 200);
  });

  test('METRICS_TOKEN: /metrics then needs it as a bearer token (a scraper off Fly), compared whole; never through Fly\'s edge', async () => {
    const metricsToken = 'metrics-token-0123456789abcdef-xyz';
    const prod = buildTestApp(database, { env: { ...PRODUCTION, METRICS_TOKEN: metricsToken } });
    prod.deps.metrics.paymentAttempts.inc({ outcome: 'succeeded' }, 3);
    const get = (headers: Record<string, string>) => prod.app.request('/metrics', { headers }, socket('10.0.0.9'));
    for (const headers of [{} as Record<string, string>, { authorization: 'Bearer wrong-token-0123456789abcdef-xyz' }, { authorization: `Bearer ${metricsToken.slice(0, -1)}` }, { authorization: `Basic ${metricsToken}` }, { authorization: metricsToken }]) {
      const res = await get(headers);
      assert.equal(res.status, 401, JSON.stringify(headers));
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="metrics"');
      assert.doesNotMatch(await res.text(), /invoiceiq_payment_attempts_total/);
    }
    const res = await get({ authorization: `Bearer ${metricsToken}` });
    assert.equal(res.status, 200);
    assert.match(await res.text(), /invoiceiq_payment_attempts_total\{outcome="succeeded"\} 3/);
    const edge = await prod.app.request('/metrics', { headers: { authorization: `Bearer ${metricsToken}`, 'fly-client-ip': '203.0.113.9' } }, socket(FLY_PROXY));
    assert.equal(edge.status, 404, 'through Fly\'s public edge, even with the token');
    // Unset: the private network reads it without one (Fly's scraper), as before.
    const open = await buildTestApp(database, { env: PRODUCTION }).app.request('/metrics', {}, socket('10.0.0.9'));
    assert.equal(open.status, 200);
  });

  test('METRICS_TOKEN shorter than 24 characters is a configuration error that names it (and not its value)', () => {
    assert.throws(() => loadConfig({ METRICS_TOKEN: 'short-secret' }), (error: Error) => /METRICS_TOKEN/.test(error.message) && !error.message.includes('short-secret'));
    assert.equal(loadConfig({}).metrics.token, undefined);
  });
});


test('clientPrefix: IPv4 whole, IPv6 by its /64 in one spelling, anything else as it is', () => {
  const cases: Array<[string, string]> = [
    ['198.51.100.7', '198.51.100.7'],
    ['::ffff:198.51.100.7', '198.51.100.7'],
    ['2001:db8:42:7::1', '2001:db8:42:7::/64'],
    ['2001:0db8:0042:0007:ffff:1:2:3', '2001:db8:42:7::/64'],
    ['2001:DB8:42:7:0:0:0:9', '2001:db8:42:7::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['[2001:db8:42:7::5]', '2001:db8:42:7::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['::', '0:0:0:0::/64'],
    ['local', 'local'],
    ['1::2::3', '1::2::3'],
    ['1:2:3', '1:2:3'],
    ['1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7:8:9'],
  ];
  for (const [input, expected] of cases) assert.equal(clientPrefix(input), expected, input);
});
