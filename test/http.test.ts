import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { createApp } from '../src/app.js';
import { openDatabase, type DatabaseHandle } from '../src/db/connect.js';
import { parseJsonBody, type ErrorBody } from '../src/http/errors.js';
import { READY_TIMEOUT_MS } from '../src/http/health.js';
import { LARGE_BODIES_BUDGET, applyCommonMiddleware, type AppEnv } from '../src/http/middleware.js';
import { createMetrics } from '../src/metrics.js';
import { buildTestApp, captureLogs, type LogCapture, type LogLine, type TestApp } from './helpers/app.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let database: TestDatabase;
let t: TestApp;

before(async () => {
  database = await createTestDatabase();
  t = buildTestApp(database);
});

after(async () => {
  await database.dispose();
});

async function json<T>(response: Response): Promise<T> {
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
  return (await response.json()) as T;
}

function linesFor(logs: LogCapture, requestId: string): LogLine[] {
  return logs.lines.filter((line) => line.correlation_id === requestId);
}

function requestLine(logs: LogCapture, requestId: string): LogLine {
  const found = linesFor(logs, requestId).filter((line) => line.message === 'request completed' || line.message === 'request failed');
  assert.equal(found.length, 1, `one request line for ${requestId}`);
  const [line] = found;
  assert.ok(line);
  return line;
}

test('GET /healthz answers 200 {"status":"ok"}', async () => {
  const response = await t.app.request('/healthz');
  assert.equal(response.status, 200);
  assert.deepEqual(await json(response), { status: 'ok' });
});

test('GET /readyz answers 200 when the database answers', async () => {
  const response = await t.app.request('/readyz');
  assert.equal(response.status, 200);
  assert.deepEqual(await json(response), { status: 'ready', database: 'connected' });
});

test('GET /readyz answers 503 when the database has been closed', async () => {
  const second = await createTestDatabase();
  try {
    const app = createApp({ ...t.deps, database: second.handle });
    assert.equal((await app.request('/readyz')).status, 200, 'ready while open');
    await second.handle.close();
    const response = await app.request('/readyz');
    assert.equal(response.status, 503);
    assert.deepEqual(await json(response), { status: 'unavailable', database: 'disconnected' });
    // Liveness does not depend on the database.
    assert.equal((await app.request('/healthz')).status, 200);
  } finally {
    await second.dispose();
  }
  // The first database is unaffected.
  assert.equal((await t.app.request('/readyz')).status, 200);
});

test('GET /readyz answers 503 when the database is unreachable', async () => {
  const unreachable = await openDatabase({ kind: 'postgres', url: 'postgres://nobody@127.0.0.1:1/none', poolMax: 1, connectTimeoutMs: 500 });
  try {
    const app = createApp({ ...t.deps, database: unreachable });
    const response = await app.request('/readyz');
    assert.equal(response.status, 503);
    assert.deepEqual(await json(response), { status: 'unavailable', database: 'disconnected' });
  } finally {
    await unreachable.close();
  }
});

test('GET /readyz answers 503 in about a second when the database hangs, and 200 again once it is free', async () => {
  // A pool whose only connection is checked out and held: `select 1` queues behind it forever.
  // The embedded test database is exactly that (one PGlite session); on Postgres, a pool of one.
  let hung: DatabaseHandle;
  let ownHandle = false;
  if (database.kind === 'embedded') {
    hung = database.handle;
  } else {
    assert.ok(database.url);
    hung = await openDatabase({ kind: 'postgres', url: database.url, poolMax: 1 });
    ownHandle = true;
  }
  const app = createApp({ ...t.deps, database: hung });
  const client = await hung.pool.connect();
  let released = false;
  try {
    const started = performance.now();
    const response = await app.request('/readyz');
    const elapsed = performance.now() - started;
    assert.equal(response.status, 503);
    assert.deepEqual(await json(response), { status: 'unavailable', database: 'disconnected' });
    assert.ok(elapsed >= READY_TIMEOUT_MS - 50, `it waited for the database (${Math.round(elapsed)} ms)`);
    assert.ok(elapsed < 2_500, `it gave up at the readiness timeout, not later (${Math.round(elapsed)} ms)`);
    client.release();
    released = true;
    const recovered = await app.request('/readyz');
    assert.equal(recovered.status, 200);
  } finally {
    if (!released) client.release();
    if (ownHandle) await hung.close();
  }
});

test('GET /metrics exposes process metrics and a per-route duration histogram', async () => {
  assert.equal((await t.app.request('/healthz')).status, 200);
  const response = await t.app.request('/metrics');
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain/);
  const body = await response.text();
  assert.match(body, /^# TYPE \S*process_cpu_user_seconds_total counter$/m);
  assert.match(body, /^\S*nodejs_heap_size_used_bytes \d/m);
  assert.match(body, /^# TYPE \S*http_request_duration_seconds histogram$/m);
  assert.match(body, /^\S*http_request_duration_seconds_bucket\{[^}]*method="GET"[^}]*route="\/healthz"[^}]*\} [1-9]\d*$/m);
  assert.match(body, /^\S*http_request_duration_seconds_count\{[^}]*route="\/healthz"[^}]*\} [1-9]\d*$/m);
});

test('security headers are set on every response, errors included', async () => {
  for (const path of ['/healthz', '/no-such-route']) {
    const response = await t.app.request(path);
    assert.equal(response.headers.get('x-content-type-options'), 'nosniff', path);
    assert.match(response.headers.get('x-frame-options') ?? '', /^(DENY|SAMEORIGIN)$/, path);
    assert.match(response.headers.get('strict-transport-security') ?? '', /max-age=\d+/, path);
    assert.ok(response.headers.get('referrer-policy'), path);
  }
});

test('X-Request-Id is honoured, echoed and carried as correlation_id on the request log line', async () => {
  const response = await t.app.request('/healthz', { headers: { 'X-Request-Id': 'req-abc_123.4:5' } });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('x-request-id'), 'req-abc_123.4:5');
  const line = requestLine(t.logs, 'req-abc_123.4:5');
  assert.equal(line.method, 'GET');
  assert.equal(line.route, '/healthz');
  assert.equal(line.status, 200);
  assert.equal(typeof line.duration_ms, 'number');
  assert.ok((line.duration_ms as number) >= 0);
  assert.equal(line.level, 'info');
});

test('X-Correlation-ID is honoured when there is no X-Request-Id', async () => {
  const response = await t.app.request('/readyz', { headers: { 'X-Correlation-ID': 'corr-42' } });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('x-request-id'), 'corr-42');
  const line = requestLine(t.logs, 'corr-42');
  assert.equal(line.route, '/readyz');
  assert.equal(line.status, 200);
});

test('a sane X-Correlation-ID is used when the X-Request-Id offered is not sane', async () => {
  const response = await t.app.request('/healthz', { headers: { 'X-Request-Id': 'has spaces', 'X-Correlation-ID': 'corr-fallback-1' } });
  assert.equal(response.headers.get('x-request-id'), 'corr-fallback-1');
});

test('a request id is generated when none is offered, or the offered one is not sane', async () => {
  const offers: (Record<string, string> | undefined)[] = [
    undefined,
    { 'X-Request-Id': 'has spaces in it' },
    { 'X-Request-Id': 'a'.repeat(500) },
    { 'X-Correlation-ID': 'semi;colon' },
    { 'X-Request-Id': '' },
  ];
  const seen = new Set<string>();
  for (const headers of offers) {
    const response = await t.app.request('/healthz', headers === undefined ? {} : { headers });
    assert.equal(response.status, 200);
    const id = response.headers.get('x-request-id') ?? '';
    assert.match(id, uuid, JSON.stringify(headers));
    assert.ok(!seen.has(id), 'a fresh id each time');
    seen.add(id);
    const line = requestLine(t.logs, id);
    assert.equal(line.route, '/healthz');
  }
  assert.ok(!t.logs.text().includes('has spaces in it'));
  assert.ok(!t.logs.text().includes('a'.repeat(500)));
});

test('an unknown route is a JSON 404 {code, message, requestId}', async () => {
  const response = await t.app.request('/invoices/nope', { headers: { 'X-Request-Id': 'nf-1' } });
  assert.equal(response.status, 404);
  const body = await json<ErrorBody>(response);
  assert.deepEqual(Object.keys(body).sort(), ['code', 'message', 'requestId']);
  assert.equal(body.code, 'not_found');
  assert.equal(body.requestId, 'nf-1');
  assert.equal(typeof body.message, 'string');
  assert.equal(requestLine(t.logs, 'nf-1').status, 404);
});

test('an oversized body is refused with a JSON 413 on ordinary paths', async () => {
  const response = await t.app.request('/healthz', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'X-Request-Id': 'big-1' },
    body: JSON.stringify({ padding: 'x'.repeat(100 * 1024) }),
  });
  assert.equal(response.status, 413);
  const body = await json<ErrorBody>(response);
  assert.equal(body.code, 'payload_too_large');
  assert.equal(body.requestId, 'big-1');
  // A small body to the same path is not refused as too large.
  const small = await t.app.request('/healthz', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(small.status, 404);
});

test('webhook paths accept bodies up to about 3 MB', async () => {
  const twoMegabytes = await t.app.request('/whatsapp/anything', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ padding: 'x'.repeat(2 * 1024 * 1024) }),
  });
  assert.equal(twoMegabytes.status, 404, 'not refused as too large: it reaches routing (and there is no route yet)');
  assert.equal((await json<ErrorBody>(twoMegabytes)).code, 'not_found');
  const fourMegabytes = await t.app.request('/whatsapp/anything', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ padding: 'x'.repeat(4 * 1024 * 1024) }),
  });
  assert.equal(fourMegabytes.status, 413);
  assert.equal((await json<ErrorBody>(fourMegabytes)).code, 'payload_too_large');
});

/** A small app on the common middleware, with routes that exercise body parsing, errors and logging. */
function buildProbeApp(): { app: Hono<AppEnv>; logs: LogCapture } {
  const logs = captureLogs();
  const app = new Hono<AppEnv>();
  applyCommonMiddleware(app, { logger: logs.logger, metrics: createMetrics() });
  const Item = z.object({ name: z.string().min(1), amount: z.number().int().positive() });
  app.post('/items', async (c) => {
    const item = await parseJsonBody(c, Item);
    return c.json({ created: item }, 201);
  });
  app.get('/boom', () => {
    throw new Error('kaboom: connection to db.internal refused for 254712345678');
  });
  app.post('/chatty', async (c) => {
    const logger = c.get('logger');
    logger.info('step one');
    logger.debug({ headers: c.req.header() }, 'headers seen');
    logger.warn({ body: await c.req.json<unknown>() }, 'body seen');
    return c.json({ ok: true });
  });
  return { app, logs };
}

test('malformed JSON is a 400 malformed_json', async () => {
  const { app } = buildProbeApp();
  const response = await app.request('/items', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name": "tea",' });
  assert.equal(response.status, 400);
  const body = await json<ErrorBody>(response);
  assert.equal(body.code, 'malformed_json');
  assert.equal(typeof body.requestId, 'string');
});

test('a body that is not JSON by content type is a 415 unsupported_media_type', async () => {
  const { app } = buildProbeApp();
  for (const contentType of ['text/plain', 'application/x-www-form-urlencoded', undefined]) {
    const response = await app.request('/items', {
      method: 'POST',
      headers: contentType === undefined ? {} : { 'content-type': contentType },
      body: '{"name":"tea","amount":100}',
    });
    assert.equal(response.status, 415, String(contentType));
    assert.equal((await json<ErrorBody>(response)).code, 'unsupported_media_type');
  }
  const vendorJson = await app.request('/items', {
    method: 'POST',
    headers: { 'content-type': 'application/vnd.api+json; charset=utf-8' },
    body: '{"name":"tea","amount":100}',
  });
  assert.equal(vendorJson.status, 201, '+json types are JSON');
});

test('JSON that does not match the schema is a 422 invalid_body naming the fields', async () => {
  const { app } = buildProbeApp();
  const response = await app.request('/items', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"","amount":-3}' });
  assert.equal(response.status, 422);
  const body = await json<ErrorBody>(response);
  assert.equal(body.code, 'invalid_body');
  assert.match(body.message, /name/);
  assert.match(body.message, /amount/);
  const valid = await app.request('/items', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"tea","amount":100}' });
  assert.equal(valid.status, 201);
  assert.deepEqual(await json(valid), { created: { name: 'tea', amount: 100 } });
});

test('an unexpected error is a 500 internal_error without details, logged, and the next request still works', async () => {
  const { app, logs } = buildProbeApp();
  const response = await app.request('/boom', { headers: { 'X-Request-Id': 'boom-1' } });
  assert.equal(response.status, 500);
  const text = await response.text();
  const body = JSON.parse(text) as ErrorBody;
  assert.equal(body.code, 'internal_error');
  assert.equal(body.requestId, 'boom-1');
  assert.doesNotMatch(text, /kaboom|db\.internal|254712345678/);
  assert.doesNotMatch(text, /\bat .*\.(ts|js):\d+/);
  assert.doesNotMatch(text, /\\n\s+at /);
  assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
  // The details are in the logs, under the request's correlation id, with the phone masked.
  const lines = linesFor(logs, 'boom-1');
  const unhandled = lines.find((line) => line.message === 'unhandled error');
  assert.ok(unhandled, 'the error is logged');
  assert.equal(unhandled.level, 'error');
  assert.match(JSON.stringify(unhandled.error), /kaboom/);
  assert.ok(!logs.text().includes('254712345678'));
  const summary = requestLine(logs, 'boom-1');
  assert.equal(summary.status, 500);
  assert.equal(summary.level, 'error');
  assert.equal(summary.route, '/boom');
  const next = await app.request('/items', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"tea","amount":1}' });
  assert.equal(next.status, 201);
});

test('every line logged while handling a request carries its correlation_id', async () => {
  const { app, logs } = buildProbeApp();
  const response = await app.request('/chatty', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'X-Correlation-ID': 'chat-7' },
    body: '{"hello":"world"}',
  });
  assert.equal(response.status, 200);
  const lines = logs.lines;
  assert.deepEqual(
    lines.map((line) => line.message),
    ['step one', 'headers seen', 'body seen', 'request completed'],
  );
  for (const line of lines) assert.equal(line.correlation_id, 'chat-7', line.message);
  const summary = requestLine(logs, 'chat-7');
  assert.equal(summary.method, 'POST');
  assert.equal(summary.route, '/chatty');
});

test('the Authorization header and other secrets never reach the logs', async () => {
  const { app, logs } = buildProbeApp();
  const secretHeaders = {
    Authorization: 'Bearer header-SECRET-1',
    'X-Hub-Signature-256': 'sha256=header-SECRET-2',
    Cookie: 'session=header-SECRET-3',
  };
  const response = await app.request('/chatty', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...secretHeaders },
    body: JSON.stringify({ password: 'body-SECRET-4', nested: { passkey: 'body-SECRET-5', phone: '254712345678' } }),
  });
  assert.equal(response.status, 200);
  const text = logs.text();
  assert.ok(!text.includes('SECRET'), text);
  assert.ok(!text.includes('254712345678'), text);
  const headersLine = logs.lines.find((line) => line.message === 'headers seen');
  const headers = headersLine?.headers as Record<string, unknown>;
  assert.equal(headers.authorization, '[REDACTED]');
  assert.equal(headers['x-hub-signature-256'], '[REDACTED]');
  assert.equal(headers.cookie, '[REDACTED]');
  assert.equal(headers['content-type'], 'application/json');
  // The real app's own request lines do not carry them either.
  await t.app.request('/healthz', { headers: secretHeaders });
  await t.app.request('/nothing-here', { headers: secretHeaders });
  assert.ok(!t.logs.text().includes('SECRET'));
});

test('over real HTTP, the body limit holds for a declared Content-Length and for a chunked body', async () => {
  const { app } = buildProbeApp();
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const { port } = server.address() as AddressInfo;
  const send = (body: string, chunked: boolean) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const headers: Record<string, string | number> = { 'content-type': 'application/json' };
      if (!chunked) headers['content-length'] = Buffer.byteLength(body);
      const req = httpRequest({ host: '127.0.0.1', port, path: '/items', method: 'POST', headers }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      if (chunked) {
        // Written in pieces with no length: the limit has to count the bytes as they come.
        for (let i = 0; i < body.length; i += 16 * 1024) req.write(body.slice(i, i + 16 * 1024));
        req.end();
      } else req.end(body);
    });
  try {
    const big = JSON.stringify({ name: 'x'.repeat(100 * 1024), amount: 1 });
    for (const chunked of [false, true]) {
      const refused = await send(big, chunked);
      assert.equal(refused.status, 413, `chunked=${chunked}`);
      assert.equal((JSON.parse(refused.body) as ErrorBody).code, 'payload_too_large');
      const fine = await send(JSON.stringify({ name: 'tea', amount: 100 }), chunked);
      assert.equal(fine.status, 201, `chunked=${chunked}: ${fine.body}`);
      assert.deepEqual(JSON.parse(fine.body), { created: { name: 'tea', amount: 100 } });
    }
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('an STK callback token never reaches the request log, whether its route answered or the body limit or a 404 did', async () => {
  const token = 'cbtokenZ9f3Qe7Lw2Xk5Rm8Tn4Vp6Ys1Ua0';
  const cases: Array<[string, RequestInit, number]> = [
    // Refused by the body limit before any route matched (the route pattern is then /*).
    [`/payments/stk/callback/${token}`, { method: 'POST', body: 'x'.repeat(70_000), headers: { 'content-type': 'application/json', 'content-length': '70000' } }, 413],
    // No route for this method or shape.
    [`/payments/stk/callback/${token}`, { method: 'GET' }, 404],
    [`/payments/stk/callback/${token}/`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } }, 404],
  ];
  for (const [path, init, status] of cases) {
    const requestId = `cb-${status}-${path.length}`;
    const response = await t.app.request(path, { ...init, headers: { ...(init.headers as Record<string, string> | undefined), 'x-request-id': requestId } });
    assert.equal(response.status, status, path);
    const line = requestLine(t.logs, requestId);
    assert.equal(line.path, '/payments/stk/callback/…', JSON.stringify(line));
  }
  assert.ok(!t.logs.text().includes(token));
});

test('large webhook bodies held in memory at once are bounded: one past LARGE_BODIES_BUDGET is answered 503 before its body is read, small ones never wait (found by a security review)', async () => {
  const server = serve({ fetch: t.app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const { port } = server.address() as AddressInfo;
  const size = 3_000_000;
  /** A slow upload: headers and a first piece now, the rest when told. */
  const slow = () => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/whatsapp/webhook', method: 'POST', headers: { 'content-type': 'application/json', 'content-length': size } });
    const status = new Promise<number>((resolve, reject) => {
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
    });
    req.write('x'.repeat(1024));
    return { finish: () => (req.end('x'.repeat(size - 1024)), status) };
  };
  /** A body of `bytes` written in 64 KB pieces with no length (chunked); its answer's status. */
  const chunked = (bytes: number) =>
    new Promise<number>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/whatsapp/webhook', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      for (let i = 0; i < bytes; i += 65_536) req.write('x'.repeat(Math.min(65_536, bytes - i)));
      req.end();
    });
  const post = (body: string, headers: Record<string, string> = {}) =>
    fetch(`http://127.0.0.1:${port}/whatsapp/webhook`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body }).then(async (r) => ({ status: r.status, retryAfter: r.headers.get('retry-after'), body: await r.text() }));
  try {
    let seen = 0;
    server.on('request', () => (seen += 1));
    const held = Array.from({ length: Math.floor(LARGE_BODIES_BUDGET / size) }, slow);
    // Let the server see every held request's headers (and its handler take their share): a
    // large body sent before that is served, unsigned (401), and the next one is tried.
    const deadline = performance.now() + 15_000;
    while (seen < held.length) {
      assert.ok(performance.now() < deadline, `the server saw ${seen} of ${held.length} held requests`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    let refused = await post('x'.repeat(size));
    while (refused.status === 401 && performance.now() < deadline) refused = await post('x'.repeat(size));
    assert.equal(refused.status, 503);
    assert.equal(refused.retryAfter, '5');
    assert.equal((JSON.parse(refused.body) as ErrorBody).code, 'busy');
    // A webhook of ordinary size goes through meanwhile (here unsigned: 401, not 503).
    assert.equal((await post('{"object":"whatsapp_business_account","entry":[]}')).status, 401);
    // So is a body of unknown length (chunked), counted as it arrives.
    assert.equal(await chunked(2_000_000), 503);
    assert.equal(await chunked(10_000), 401);
    // Once the held ones are done (unsigned: 401), a large body is read again.
    assert.deepEqual(await Promise.all(held.map((h) => h.finish())), held.map(() => 401));
    assert.equal((await post('x'.repeat(size))).status, 401);
    assert.equal(await chunked(2_000_000), 401);
    assert.equal(await chunked(3_200_000), 413, 'past the webhook limit');
  } finally {
    (server as import('node:http').Server).closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
