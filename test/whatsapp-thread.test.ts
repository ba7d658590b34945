/**
 * The send thread (src/providers/whatsapp/thread.ts) beyond the client's own suites (run on it
 * in whatsapp-client.test.ts): many sends at once each get their own answer; a thread that
 * stops fails the sends in flight as network errors (retryable) and the next send starts a new
 * one, and one that dies by itself fails them the same way; an idle thread does not keep the process alive, a send in flight does; a request the
 * thread cannot read is refused to its caller; the built service (plain node) finds its thread.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { ProviderError, TransportError } from '../src/providers/errors.js';
import { createWhatsAppSendThread, failureToError, ThreadAnswers } from '../src/providers/whatsapp/thread.js';

let server: Server;
let baseUrl: string;
/** Requests that hang (answered only when released). */
const hanging: Array<() => void> = [];
let hang = false;
let received = 0;

before(async () => {
  // Answers each send with a wamid naming its recipient, so a mix-up would show.
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received += 1;
      const { to } = JSON.parse(Buffer.concat(chunks).toString()) as { to: string };
      const answer = () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ messaging_product: 'whatsapp', messages: [{ id: `wamid.${to}` }] }));
      };
      if (hang) hanging.push(answer);
      else answer();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

const settings = () => ({ baseUrl, apiVersion: 'v21.0', phoneId: '1', token: 't', timeoutMs: 5_000 });

test('300 sends at once: each gets the answer to its own request', async () => {
  const thread = createWhatsAppSendThread(settings());
  try {
    const to = Array.from({ length: 300 }, (_, i) => `2547${String(i).padStart(8, '0')}`);
    const answers = await Promise.all(
      to.map((phone, i) =>
        i % 2 === 0 ? thread.send(phone, { type: 'text', body: `hi ${i}` }) : thread.sendTemplate(phone, { name: 'invoice_receipt', language: 'en', parameters: [`p${i}`] }),
      ),
    );
    assert.deepEqual(
      answers.map((a) => a.wamid),
      to.map((phone) => `wamid.${phone}`),
    );
  } finally {
    await thread.close();
  }
});

test('a thread that stops fails the sends in flight as network errors (retryable: they may have gone), and the next send starts a new thread', async () => {
  const thread = createWhatsAppSendThread(settings());
  try {
    hang = true;
    const before = received;
    const inFlight = thread.send('254700000001', { type: 'text', body: 'hi' });
    const failed = inFlight.then(
      () => assert.fail('the send should have failed'),
      (error: unknown) => error,
    );
    // The request reached the server: then the thread goes.
    for (let i = 0; i < 200 && received === before; i += 1) await new Promise((resolve) => setTimeout(resolve, 25));
    assert.equal(received, before + 1, 'the request did not reach the server');
    await thread.close();
    const error = await failed;
    assert.ok(error instanceof TransportError, String(error));
    assert.equal(error.reason, 'network');
    assert.equal(error.retryable, true);
    hang = false;
    hanging.splice(0).forEach((answer) => answer());
    assert.deepEqual(await thread.send('254700000002', { type: 'text', body: 'again' }), { wamid: 'wamid.254700000002' });
  } finally {
    hang = false;
    hanging.splice(0).forEach((answer) => answer());
    await thread.close();
  }
});

test('a thread that dies by itself (here: it refuses its settings at start) fails the sends waiting on it as network errors', async () => {
  const thread = createWhatsAppSendThread({ ...settings(), timeoutMs: 0 });
  try {
    const error = await thread.send('254700000005', { type: 'text', body: 'hi' }).then(
      () => assert.fail('should fail'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof TransportError, String(error));
    assert.equal(error.reason, 'network');
    assert.match(error.message, /send thread stopped/);
  } finally {
    await thread.close();
  }
});

test('not configured: refused at once, no thread started, no request made', async () => {
  const before = received;
  const thread = createWhatsAppSendThread({ ...settings(), token: undefined });
  assert.equal(thread.configured, false);
  const error = await thread.send('254700000003', { type: 'text', body: 'hi' }).then(
    () => assert.fail('should fail'),
    (e: unknown) => e,
  );
  assert.ok(error instanceof TransportError);
  assert.equal(error.reason, 'not_configured');
  assert.equal(received, before);
  await thread.close();
});

test('an idle thread does not keep the process alive; a send in flight does until it is answered', { timeout: 60_000 }, async () => {
  // A child process sends one message (the server answers after 1.5 s), then has nothing to do:
  // it must wait for the answer, print it, and exit by itself.
  const script = `
    import { createWhatsAppSendThread } from './src/providers/whatsapp/thread.ts';
    const thread = createWhatsAppSendThread(${JSON.stringify({ ...settings(), timeoutMs: 10_000 })});
    thread.send('254700000004', { type: 'text', body: 'hi' }).then((a) => console.log('ANSWER', a.wamid), (e) => console.log('FAILED', e.message));
  `;
  hang = true;
  const release = setTimeout(() => {
    hang = false;
    hanging.splice(0).forEach((answer) => answer());
  }, 1_500);
  try {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const started = Date.now();
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 0);
    assert.match(out, /ANSWER wamid\.254700000004/);
    assert.ok(Date.now() - started >= 1_400, 'the process exited before the answer came');
  } finally {
    clearTimeout(release);
    hang = false;
    hanging.splice(0).forEach((answer) => answer());
  }
});

test('the built service (tsc, plain node, no tsx) finds and runs its send thread', { timeout: 180_000 }, async () => {
  // Under tsx the thread loads thread-worker.ts through tsx; built, thread-worker.js beside thread.js.
  const outDir = join('node_modules', '.cache', `thread-build-${process.pid}`);
  try {
    const build = spawn(process.execPath, [join('node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json', '--outDir', outDir], { stdio: ['ignore', 'inherit', 'inherit'] });
    assert.equal(await new Promise((resolve) => build.once('exit', resolve)), 0, 'the build failed');
    const built = pathToFileURL(resolve(outDir, 'src', 'providers', 'whatsapp', 'thread.js')).href;
    const script = `
      const { createWhatsAppSendThread } = await import(${JSON.stringify(built)});
      const thread = createWhatsAppSendThread(${JSON.stringify(settings())});
      console.log('ANSWER', (await thread.send('254700000006', { type: 'text', body: 'hi' })).wamid);
      await thread.close();
    `;
    const entry = join(outDir, 'send-one.mjs');
    writeFileSync(entry, script);
    // As deployed (package.json start:prod): plain node, the service's flags.
    const child = spawn(process.execPath, ['--max-semi-space-size=64', entry], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    assert.equal(await new Promise((resolve) => child.once('exit', resolve)), 0, err);
    assert.match(out, /ANSWER wamid\.254700000006/);
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
});

test("the thread's answers are parsed at the boundary: an unreadable batch is refused; failures rebuild the client's errors", () => {
  assert.equal(ThreadAnswers.safeParse([{ id: 'x', wamid: 'w' }]).success, false);
  assert.equal(ThreadAnswers.safeParse([{ id: 1, failure: { type: 'transport', provider: 'whatsapp', message: 'm', reason: 'exploded' } }]).success, false);
  const provider = failureToError({ type: 'provider', provider: 'whatsapp', message: 'rate', httpStatus: 429, code: '130429', retryable: true, retryAfterSeconds: 7 });
  assert.ok(provider instanceof ProviderError);
  assert.deepEqual(
    { message: provider.message, provider: provider.provider, httpStatus: provider.httpStatus, code: provider.code, retryable: provider.retryable, retryAfterSeconds: provider.retryAfterSeconds },
    { message: 'rate', provider: 'whatsapp', httpStatus: 429, code: '130429', retryable: true, retryAfterSeconds: 7 },
  );
  const transport = failureToError({ type: 'transport', provider: 'whatsapp', message: 'gone', reason: 'timeout' });
  assert.ok(transport instanceof TransportError && transport.reason === 'timeout' && transport.retryable);
});
