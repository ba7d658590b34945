/**
 * SMS_USE_SANDBOX: a client created with useSandbox sends as user `sandbox` to AT's sandbox
 * host. Its own file (its own process under `node --test`): the SDK switches to the sandbox
 * host for the whole process, for good, once any instance is created with username `sandbox`.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import nock from 'nock';
import { createSmsClient } from '../src/providers/sms/client.js';
import { formOf } from './helpers/provider-errors.js';

const LIVE_HOST = 'https://api.africastalking.com';
const SANDBOX_HOST = 'https://api.sandbox.africastalking.com';
const accepted = { SMSMessageData: { Message: 'Sent to 1/1', Recipients: [{ statusCode: 101, number: '+254712345678', status: 'Success', cost: 'KES 0.8000', messageId: 'ATXid_sandbox' }] } };

type Captured = { host: string | undefined; path: string; form: URLSearchParams; apikey: string | undefined };

before(() => {
  nock.disableNetConnect();
  nock.enableNetConnect('127.0.0.1');
});

afterEach(() => {
  nock.cleanAll();
});

after(() => {
  nock.cleanAll();
  nock.enableNetConnect();
});

function intercept(host: string, captured: Captured[]): nock.Scope {
  return nock(host)
    .post('/version1/messaging')
    .reply(201, function (this: nock.ReplyFnContext, path: string, body: nock.Body) {
      captured.push({ host: this.req.headers.host, path, form: formOf(body), apikey: this.req.headers.apikey });
      return accepted;
    });
}

test('before any sandbox client, a live client hits the live host', async () => {
  const live: Captured[] = [];
  intercept(LIVE_HOST, live);
  const result = await createSmsClient({ apiKey: 'live-key', username: 'invoiceiq', senderId: undefined, useSandbox: false, timeoutMs: 5_000 }).send('254712345678', 'hi');
  assert.equal(result.messageId, 'ATXid_sandbox');
  assert.equal(live[0]?.host, 'api.africastalking.com');
  assert.equal(live[0]?.path, '/version1/messaging');
});

test('useSandbox: username sandbox, sandbox host', async () => {
  const sandbox: Captured[] = [];
  const live: Captured[] = [];
  const sandboxScope = intercept(SANDBOX_HOST, sandbox);
  const liveScope = intercept(LIVE_HOST, live);

  // SMS_USERNAME is ignored in sandbox mode: the SDK requires the literal `sandbox`.
  const client = createSmsClient({ apiKey: 'sandbox-key', username: 'invoiceiq', senderId: undefined, useSandbox: true, timeoutMs: 5_000 });
  assert.equal(client.configured, true);
  const result = await client.send('254712345678', 'Sandbox hello');

  assert.deepEqual(result, { messageId: 'ATXid_sandbox', statusCode: 101 });
  assert.ok(sandboxScope.isDone(), 'the sandbox host was called');
  assert.equal(liveScope.isDone(), false, 'the live host was not called');
  assert.equal(sandbox.length, 1);
  assert.equal(live.length, 0);
  assert.equal(sandbox[0]?.host, 'api.sandbox.africastalking.com');
  assert.equal(sandbox[0]?.path, '/version1/messaging');
  assert.equal(sandbox[0]?.form.get('username'), 'sandbox');
  assert.equal(sandbox[0]?.form.get('to'), '+254712345678');
  assert.equal(sandbox[0]?.apikey, 'sandbox-key');
});

test('the trap: once a sandbox client exists, even a live client goes to the sandbox host', async () => {
  const sandbox: Captured[] = [];
  const live: Captured[] = [];
  intercept(SANDBOX_HOST, sandbox);
  intercept(LIVE_HOST, live);
  await createSmsClient({ apiKey: 'live-key', username: 'invoiceiq', senderId: undefined, useSandbox: false, timeoutMs: 5_000 }).send('254712345678', 'hi');
  assert.equal(live.length, 0);
  assert.equal(sandbox.length, 1);
  assert.equal(sandbox[0]?.form.get('username'), 'invoiceiq');
});
