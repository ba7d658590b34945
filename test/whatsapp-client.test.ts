/**
 * The WhatsApp Cloud API client against a fake Graph server over real HTTP (test/fakes/graph.ts),
 * and the webhook signature check.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import type { MessageContent } from '../src/domain/outbound.js';
import { ProviderError, TransportError } from '../src/providers/errors.js';
import { createWhatsAppClient, type WhatsAppClient, type WhatsAppClientSettings } from '../src/providers/whatsapp/client.js';
import { signBody, verifySignature } from '../src/providers/whatsapp/signature.js';
import { startFakeGraph, type FakeGraph, type RecordedRequest } from './fakes/graph.js';
import { APP_SECRET, PHONE_ID } from './fixtures/whatsapp.js';
import { formOf, providerError as providerErrorFor, transportError as transportErrorFor } from './helpers/provider-errors.js';

const providerError = (promise: Promise<unknown>) => providerErrorFor(promise, 'whatsapp');
const transportError = (promise: Promise<unknown>) => transportErrorFor(promise, 'whatsapp');

const TOKEN = 'EAAG-test-token-0123456789';
const API_VERSION = 'v21.0';
const TO = '254712345678';

let graph: FakeGraph;

before(async () => {
  graph = await startFakeGraph();
});

after(async () => {
  await graph.close();
});

beforeEach(() => {
  graph.requests.length = 0;
  graph.setFallback({ kind: 'ok' });
});

function settings(overrides: Partial<WhatsAppClientSettings> = {}): WhatsAppClientSettings {
  return { baseUrl: graph.baseUrl, apiVersion: API_VERSION, phoneId: PHONE_ID, token: TOKEN, timeoutMs: 5_000, ...overrides };
}

function client(overrides: Partial<WhatsAppClientSettings> = {}): WhatsAppClient {
  return createWhatsAppClient(settings(overrides));
}

function onlyRequest(): RecordedRequest {
  assert.equal(graph.requests.length, 1, 'exactly one request to Graph');
  const [request] = graph.requests;
  assert.ok(request);
  return request;
}


describe('request shape', () => {
  test('text: URL, bearer token, JSON body; returns the wamid', async () => {
    graph.queue({ kind: 'ok', wamid: 'wamid.TEXT000001' });
    const result = await client().send(TO, { type: 'text', body: 'Habari Wanjiku! https://example.com/inv/7' });

    assert.deepEqual(result, { wamid: 'wamid.TEXT000001' });
    const request = onlyRequest();
    assert.equal(request.method, 'POST');
    assert.equal(request.path, `/${API_VERSION}/${PHONE_ID}/messages`);
    assert.equal(request.headers.authorization, `Bearer ${TOKEN}`);
    assert.match(request.headers['content-type'] ?? '', /^application\/json/);
    assert.deepEqual(request.body, {
      messaging_product: 'whatsapp',
      recipient_type: 'individual',
      to: TO,
      type: 'text',
      text: { preview_url: false, body: 'Habari Wanjiku! https://example.com/inv/7' },
    });
  });

  test('reply buttons', async () => {
    const content: MessageContent = { type: 'buttons', body: 'Pay INV-0007 (KES 1,500)?', buttons: [{ id: 'pay:INV-0007', title: 'Pay now' }, { id: 'later', title: 'Later' }] };
    await client().send(TO, content);
    assert.deepEqual(onlyRequest().body, {
      messaging_product: 'whatsapp',
      recipient_type: 'individual',
      to: TO,
      type: 'interactive',
      interactive: {
        type: 'button',
        body: { text: 'Pay INV-0007 (KES 1,500)?' },
        action: {
          buttons: [
            { type: 'reply', reply: { id: 'pay:INV-0007', title: 'Pay now' } },
            { type: 'reply', reply: { id: 'later', title: 'Later' } },
          ],
        },
      },
    });
  });

  test('reply buttons with a footer', async () => {
    await client().send(TO, { type: 'buttons', body: 'Pay?', footer: 'InvoiceIQ', buttons: [{ id: 'pay', title: 'Pay' }] });
    const interactive = onlyRequest().body.interactive;
    assert.deepEqual(interactive, {
      type: 'button',
      body: { text: 'Pay?' },
      footer: { text: 'InvoiceIQ' },
      action: { buttons: [{ type: 'reply', reply: { id: 'pay', title: 'Pay' } }] },
    });
  });

  test('list', async () => {
    const content: MessageContent = {
      type: 'list',
      body: 'Which invoice?',
      button: 'Invoices',
      sections: [
        { title: 'Unpaid', rows: [{ id: 'inv:7', title: 'INV-0007', description: 'KES 1,500' }] },
        { rows: [{ id: 'inv:3', title: 'INV-0003' }] },
      ],
    };
    await client().send(TO, content);
    assert.deepEqual(onlyRequest().body, {
      messaging_product: 'whatsapp',
      recipient_type: 'individual',
      to: TO,
      type: 'interactive',
      interactive: {
        type: 'list',
        body: { text: 'Which invoice?' },
        action: {
          button: 'Invoices',
          sections: [
            { title: 'Unpaid', rows: [{ id: 'inv:7', title: 'INV-0007', description: 'KES 1,500' }] },
            { rows: [{ id: 'inv:3', title: 'INV-0003' }] },
          ],
        },
      },
    });
  });

  test('template with body parameters and a quick-reply payload', async () => {
    graph.queue({ kind: 'ok', wamid: 'wamid.TEMPLATE01' });
    const result = await client().sendTemplate(TO, { name: 'invoice_issued_v1', language: 'en', parameters: ['Wanjiku', 'INV-0007', 'KES 1,500'], buttonPayload: 'pay:INV-0007' });

    assert.deepEqual(result, { wamid: 'wamid.TEMPLATE01' });
    const request = onlyRequest();
    assert.equal(request.path, `/${API_VERSION}/${PHONE_ID}/messages`);
    assert.equal(request.headers.authorization, `Bearer ${TOKEN}`);
    assert.deepEqual(request.body, {
      messaging_product: 'whatsapp',
      recipient_type: 'individual',
      to: TO,
      type: 'template',
      template: {
        name: 'invoice_issued_v1',
        language: { code: 'en' },
        components: [
          {
            type: 'body',
            parameters: [
              { type: 'text', text: 'Wanjiku' },
              { type: 'text', text: 'INV-0007' },
              { type: 'text', text: 'KES 1,500' },
            ],
          },
          { type: 'button', sub_type: 'quick_reply', index: '0', parameters: [{ type: 'payload', payload: 'pay:INV-0007' }] },
        ],
      },
    });
  });

  test('template without a button payload has no button component', async () => {
    await client().sendTemplate(TO, { name: 'payment_received_v1', language: 'sw', parameters: ['INV-0007'] });
    assert.deepEqual(onlyRequest().body.template, {
      name: 'payment_received_v1',
      language: { code: 'sw' },
      components: [{ type: 'body', parameters: [{ type: 'text', text: 'INV-0007' }] }],
    });
  });

  test('configured is true with a token and a phone id', () => {
    assert.equal(client().configured, true);
  });
});

describe('error classification', () => {
  test('HTTP 500 -> ProviderError, retryable', async () => {
    graph.queue({ kind: 'error', status: 500, code: 1, message: 'An unknown error occurred' });
    const error = await providerError(client().send(TO, { type: 'text', body: 'hi' }));
    assert.equal(error.retryable, true);
    assert.equal(error.httpStatus, 500);
    assert.equal(error.code, '1');
  });

  test('HTTP 503 with a body that is not JSON -> ProviderError, retryable, no code', async () => {
    graph.queue({ kind: 'raw', status: 503, body: '<html>Service Unavailable</html>' });
    const error = await providerError(client().send(TO, { type: 'text', body: 'hi' }));
    assert.equal(error.retryable, true);
    assert.equal(error.httpStatus, 503);
    assert.equal(error.code, undefined);
  });

  test('429 code 130429 with retry-after: 7 -> retryable, retryAfterSeconds 7', async () => {
    graph.queue({ kind: 'error', status: 429, code: 130429, message: 'Rate limit hit', retryAfter: 7 });
    const error = await providerError(client().send(TO, { type: 'text', body: 'hi' }));
    assert.equal(error.retryable, true);
    assert.equal(error.httpStatus, 429);
    assert.equal(error.code, '130429');
    assert.equal(error.retryAfterSeconds, 7);
    assert.equal(error.message, 'Rate limit hit');
  });

  test('429 without a Meta code -> still retryable (the status alone decides)', async () => {
    graph.queue({ kind: 'raw', status: 429, body: 'Too Many Requests' });
    const error = await providerError(client().send(TO, { type: 'text', body: 'hi' }));
    assert.equal(error.retryable, true);
    assert.equal(error.httpStatus, 429);
    assert.equal(error.code, undefined);
  });

  test('an error without retry-after has no retryAfterSeconds', async () => {
    graph.queue({ kind: 'error', status: 429, code: 130429 });
    const error = await providerError(client().send(TO, { type: 'text', body: 'hi' }));
    assert.equal(error.retryAfterSeconds, undefined);
  });

  for (const code of [131026, 131047, 131048, 131049]) {
    test(`400 code ${code} -> not retryable, code '${code}'`, async () => {
      graph.queue({ kind: 'error', status: 400, code, message: `error ${code}` });
      const error = await providerError(client().send(TO, { type: 'text', body: 'hi' }));
      assert.equal(error.retryable, false);
      assert.equal(error.httpStatus, 400);
      assert.equal(error.code, String(code));
    });
  }

  for (const code of [131000, 131056]) {
    test(`400 code ${code} -> retryable`, async () => {
      graph.queue({ kind: 'error', status: 400, code });
      const error = await providerError(client().sendTemplate(TO, { name: 'invoice_issued_v1', language: 'en', parameters: ['x'] }));
      assert.equal(error.retryable, true);
      assert.equal(error.httpStatus, 400);
      assert.equal(error.code, String(code));
    });
  }

  test('401 code 190 (token expired) -> not retryable', async () => {
    graph.queue({ kind: 'error', status: 401, code: 190, message: 'Error validating access token' });
    const error = await providerError(client().send(TO, { type: 'text', body: 'hi' }));
    assert.equal(error.retryable, false);
    assert.equal(error.code, '190');
  });

  test('a 200 with an unexpected body is still an acceptance: sent, its id unknown (never sent again)', async () => {
    graph.queue({ kind: 'raw', status: 200, body: JSON.stringify({ messaging_product: 'whatsapp', messages: [] }) });
    assert.deepEqual(await client().send(TO, { type: 'text', body: 'hi' }), { wamid: null });
  });

  test('a 200 with a body that is not JSON is still an acceptance', async () => {
    graph.queue({ kind: 'raw', status: 200, body: 'OK' });
    assert.deepEqual(await client().send(TO, { type: 'text', body: 'hi' }), { wamid: null });
  });

  // The test's own timeout only turns a missing client timeout into a failure instead of a hang.
  test('a server that never answers -> TransportError timeout, retryable', { timeout: 10_000 }, async () => {
    graph.queue({ kind: 'hang' });
    const error = await transportError(client({ timeoutMs: 300 }).send(TO, { type: 'text', body: 'hi' }));
    assert.equal(error.reason, 'timeout');
    assert.equal(error.retryable, true);
    assert.equal(graph.requests.length, 1, 'the request did reach the server');
  });

  test('connection refused -> TransportError network, retryable', async () => {
    const closed = await startFakeGraph();
    const baseUrl = closed.baseUrl;
    await closed.close();
    const error = await transportError(client({ baseUrl }).send(TO, { type: 'text', body: 'hi' }));
    assert.equal(error.reason, 'network');
    assert.equal(error.retryable, true);
  });

  test('no token -> TransportError not_configured, not retryable, no request made', async () => {
    const unconfigured = client({ token: undefined });
    assert.equal(unconfigured.configured, false);
    const error = await transportError(unconfigured.send(TO, { type: 'text', body: 'hi' }));
    assert.equal(error.reason, 'not_configured');
    assert.equal(error.retryable, false);
    const templateError = await transportError(unconfigured.sendTemplate(TO, { name: 't', language: 'en', parameters: [] }));
    assert.equal(templateError.reason, 'not_configured');
    assert.equal(graph.requests.length, 0);
  });

  test('no phone id -> TransportError not_configured, no request made', async () => {
    const unconfigured = client({ phoneId: undefined });
    assert.equal(unconfigured.configured, false);
    const error = await transportError(unconfigured.send(TO, { type: 'text', body: 'hi' }));
    assert.equal(error.reason, 'not_configured');
    assert.equal(graph.requests.length, 0);
  });
});

// Found in review: Retry-After has no upper limit, and may come as an HTTP-date. The fake Graph
// server sends numbers only; this one answers every send with a 429 (code 130429) and the raw
// Retry-After header under test. The client reports what was asked; src/domain/delivery.ts caps it.
describe('Retry-After parsing', () => {
  let server: Server;
  let baseUrl: string;
  let header: string | undefined;

  before(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(429, { 'content-type': 'application/json', ...(header === undefined ? {} : { 'retry-after': header }) });
        res.end(JSON.stringify({ error: { message: 'Rate limit hit', type: 'OAuthException', code: 130429, fbtrace_id: 'trace' } }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  async function retryAfterFor(value: string | undefined): Promise<number | undefined> {
    header = value;
    const error = await providerError(client({ baseUrl }).send(TO, { type: 'text', body: 'hi' }));
    assert.equal(error.retryable, true);
    assert.equal(error.code, '130429');
    return error.retryAfterSeconds;
  }

  const cases: Array<{ name: string; header: string | undefined; expected: number | undefined }> = [
    { name: 'delta-seconds 7 -> 7', header: '7', expected: 7 },
    { name: '0 -> 0', header: '0', expected: 0 },
    { name: 'a day (86400) is reported as asked: the delivery rules cap it', header: '86400', expected: 86_400 },
    { name: 'surrounding spaces are ignored', header: ' 12 ', expected: 12 },
    { name: 'negative -> none', header: '-5', expected: undefined },
    { name: 'a fraction is not delta-seconds -> none', header: '1.5', expected: undefined },
    { name: 'digits then junk -> none (not 7)', header: '7s', expected: undefined },
    { name: 'NaN -> none', header: 'NaN', expected: undefined },
    { name: 'Infinity -> none', header: 'Infinity', expected: undefined },
    { name: 'exponent notation -> none', header: '1e9', expected: undefined },
    { name: 'empty -> none', header: '', expected: undefined },
    { name: 'not a date -> none', header: 'soon', expected: undefined },
    { name: 'no header -> none', header: undefined, expected: undefined },
    { name: 'absurdly many digits -> a finite number far beyond any cap', header: '9'.repeat(400), expected: Number.MAX_SAFE_INTEGER },
    { name: 'an HTTP-date in the past -> 0, never negative', header: 'Wed, 21 Oct 2015 07:28:00 GMT', expected: 0 },
    { name: 'an RFC 850 date in the past -> 0', header: 'Sunday, 06-Nov-94 08:49:37 GMT', expected: 0 },
  ];
  for (const c of cases) {
    const shown = c.header !== undefined && c.header.length > 40 ? `${c.header.slice(0, 6)}… (${c.header.length} chars)` : c.header;
    test(`retry-after ${JSON.stringify(shown)}: ${c.name}`, async () => {
      assert.equal(await retryAfterFor(c.header), c.expected);
    });
  }

  test('an HTTP-date 2 minutes ahead -> about 120 s (whole seconds)', async () => {
    const seconds = await retryAfterFor(new Date(Date.now() + 120_000).toUTCString());
    assert.ok(seconds !== undefined && Number.isInteger(seconds) && seconds >= 110 && seconds <= 120, String(seconds));
  });

  test('an HTTP-date a day ahead -> about 86400 s, for the delivery rules to refuse', async () => {
    const seconds = await retryAfterFor(new Date(Date.now() + 86_400_000).toUTCString());
    assert.ok(seconds !== undefined && seconds >= 86_390 && seconds <= 86_400, String(seconds));
  });
});

describe('verifySignature / signBody', () => {
  const raw = '{"object":"whatsapp_business_account","entry":[{"id":"WABA0","changes":[]}]}';
  const bytes = (text: string): Uint8Array => Buffer.from(text, 'utf8');

  test('signBody is sha256= and 64 lowercase hex chars', () => {
    assert.match(signBody(raw, APP_SECRET), /^sha256=[0-9a-f]{64}$/);
    assert.equal(signBody(raw, APP_SECRET), signBody(bytes(raw), APP_SECRET));
  });

  test('a valid signature -> ok', () => {
    assert.deepEqual(verifySignature(bytes(raw), signBody(raw, APP_SECRET), APP_SECRET), { ok: true });
  });

  test('an upper-case hex digest is still valid', () => {
    const header = `sha256=${signBody(raw, APP_SECRET).slice('sha256='.length).toUpperCase()}`;
    assert.deepEqual(verifySignature(bytes(raw), header, APP_SECRET), { ok: true });
  });

  test('missing header -> missing', () => {
    assert.deepEqual(verifySignature(bytes(raw), undefined, APP_SECRET), { ok: false, reason: 'missing' });
    assert.deepEqual(verifySignature(bytes(raw), '', APP_SECRET), { ok: false, reason: 'missing' });
  });

  const hex = signBody(raw, APP_SECRET).slice('sha256='.length);
  const malformed: Array<[name: string, header: string]> = [
    ['no sha256= prefix', hex],
    ['another algorithm prefix', `sha1=${hex}`],
    ['one hex char short', `sha256=${hex.slice(1)}`],
    ['one hex char too many', `sha256=${hex}0`],
    ['non-hex characters', `sha256=${'z'.repeat(64)}`],
    ['a non-hex char inside a valid length', `sha256=${hex.slice(0, 63)}g`],
    ['empty digest', 'sha256='],
  ];
  for (const [name, header] of malformed) {
    test(`malformed: ${name}`, () => {
      assert.deepEqual(verifySignature(bytes(raw), header, APP_SECRET), { ok: false, reason: 'malformed' });
    });
  }

  test('signed with another secret -> mismatch', () => {
    assert.deepEqual(verifySignature(bytes(raw), signBody(raw, 'another-secret'), APP_SECRET), { ok: false, reason: 'mismatch' });
  });

  test('body re-encoded (JSON.parse then JSON.stringify) no longer matches Meta\'s signature', () => {
    // Meta escapes non-ASCII characters; the raw bytes hold the six characters \u00e9, not é.
    const metaRaw = '{"entry":[{"changes":[{"value":{"contacts":[{"profile":{"name":"Ren\\u00e9e Wanjir\\u0169"}}]}}]}]}';
    const header = signBody(metaRaw, APP_SECRET);
    assert.deepEqual(verifySignature(bytes(metaRaw), header, APP_SECRET), { ok: true });
    const reencoded = JSON.stringify(JSON.parse(metaRaw));
    assert.notEqual(reencoded, metaRaw);
    assert.ok(reencoded.includes('Renée'));
    assert.deepEqual(verifySignature(bytes(reencoded), header, APP_SECRET), { ok: false, reason: 'mismatch' });
  });

  test('a single flipped byte -> mismatch', () => {
    const header = signBody(raw, APP_SECRET);
    for (const index of [0, Math.floor(raw.length / 2), raw.length - 1]) {
      const tampered = Buffer.from(raw, 'utf8');
      tampered[index] = (tampered[index] ?? 0) ^ 0x01;
      assert.deepEqual(verifySignature(tampered, header, APP_SECRET), { ok: false, reason: 'mismatch' }, `byte ${index}`);
    }
  });

  test('a single flipped digest char, first or last -> mismatch', () => {
    const other = (c: string | undefined): string => (c === '0' ? '1' : '0');
    const flippedFirst = `sha256=${other(hex[0])}${hex.slice(1)}`;
    const flippedLast = `sha256=${hex.slice(0, 63)}${other(hex[63])}`;
    assert.deepEqual(verifySignature(bytes(raw), flippedFirst, APP_SECRET), { ok: false, reason: 'mismatch' });
    assert.deepEqual(verifySignature(bytes(raw), flippedLast, APP_SECRET), { ok: false, reason: 'mismatch' });
  });

  test('no secret configured -> no_secret, whatever the header', () => {
    assert.deepEqual(verifySignature(bytes(raw), signBody(raw, APP_SECRET), undefined), { ok: false, reason: 'no_secret' });
    assert.deepEqual(verifySignature(bytes(raw), undefined, undefined), { ok: false, reason: 'no_secret' });
  });
});
