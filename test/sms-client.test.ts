/**
 * The Africa's Talking SMS client through the real `africastalking` SDK, intercepted at the
 * HTTP level with nock (the SDK's hosts are hard-coded). The sandbox host is tested in
 * test/sms-sandbox.test.ts: a `sandbox` username switches the SDK for the whole process.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import nock from 'nock';
import { ProviderError, TransportError } from '../src/providers/errors.js';
import { createSmsClient, type SmsClientSettings } from '../src/providers/sms/client.js';
import { formOf, providerError as providerErrorFor, transportError as transportErrorFor } from './helpers/provider-errors.js';

const providerError = (promise: Promise<unknown>) => providerErrorFor(promise, 'sms');
const transportError = (promise: Promise<unknown>) => transportErrorFor(promise, 'sms');

const LIVE_HOST = 'https://api.africastalking.com';
const API_KEY = 'atsk_test_api_key_0123456789';
const USERNAME = 'invoiceiq';
const STORED_NUMBER = '254712345678';

type Captured = { host: string | undefined; path: string; headers: Record<string, string>; form: URLSearchParams };


before(() => {
  nock.disableNetConnect();
  nock.enableNetConnect('127.0.0.1');
});

afterEach(() => {
  nock.abortPendingRequests();
  nock.cleanAll();
});

after(() => {
  nock.cleanAll();
  nock.enableNetConnect();
});

function settings(overrides: Partial<SmsClientSettings> = {}): SmsClientSettings {
  return { apiKey: API_KEY, username: USERNAME, senderId: undefined, useSandbox: false, timeoutMs: 5_000, ...overrides };
}

function recipients(...list: Array<Record<string, string | number>>): Record<string, unknown> {
  return { SMSMessageData: { Message: `Sent to ${list.length}/${list.length} Total Cost: KES 0.8000`, Recipients: list } };
}

function recipient(statusCode: number, status: string, messageId = 'ATXid_4a1b2c3d4e5f'): Record<string, string | number> {
  return { statusCode, number: `+${STORED_NUMBER}`, status, cost: statusCode < 200 ? 'KES 0.8000' : '0', messageId };
}

/** One POST /version1/messaging on the live host, answered with `status` and `body`; records the request. */
function interceptSend(status: number, body: Record<string, unknown> | string, captured: Captured[] = []): { captured: Captured[]; scope: nock.Scope } {
  const scope = nock(LIVE_HOST)
    .post('/version1/messaging')
    .reply(status, function (this: nock.ReplyFnContext, path: string, requestBody: nock.Body) {
      captured.push({ host: this.req.headers.host, path, headers: this.req.headers, form: formOf(requestBody) });
      return body;
    });
  return { captured, scope };
}


describe('request', () => {
  test('POST /version1/messaging with apikey, Accept JSON, form body with +number, message, from', async () => {
    const { captured, scope } = interceptSend(201, recipients(recipient(101, 'Success')));
    const client = createSmsClient(settings({ senderId: 'INVOICEIQ' }));
    assert.equal(client.configured, true);

    const result = await client.send(STORED_NUMBER, 'Invoice INV-0007: KES 1,500. Reply PAY to pay.');

    assert.deepEqual(result, { messageId: 'ATXid_4a1b2c3d4e5f', statusCode: 101 });
    assert.ok(scope.isDone());
    assert.equal(captured.length, 1);
    const [request] = captured;
    assert.ok(request);
    // The interceptor is a POST on the live host: it matching at all pins method, scheme and host.
    assert.equal(request.host, 'api.africastalking.com');
    assert.equal(request.path, '/version1/messaging');
    assert.equal(request.headers.apikey, API_KEY);
    assert.equal(request.headers.accept, 'application/json');
    assert.match(request.headers['content-type'] ?? '', /^application\/x-www-form-urlencoded/);
    assert.equal(request.form.get('username'), USERNAME);
    assert.equal(request.form.get('to'), '+254712345678');
    assert.equal(request.form.get('message'), 'Invoice INV-0007: KES 1,500. Reply PAY to pay.');
    assert.equal(request.form.get('from'), 'INVOICEIQ');
  });

  test('no senderId -> no from field', async () => {
    const { captured } = interceptSend(201, recipients(recipient(101, 'Success')));
    await createSmsClient(settings()).send(STORED_NUMBER, 'hi');
    const [request] = captured;
    assert.ok(request);
    assert.equal(request.form.has('from'), false);
    assert.equal(request.form.get('to'), '+254712345678');
  });

  test('a number already stored with a plus is not doubled', async () => {
    const { captured } = interceptSend(201, recipients(recipient(101, 'Success')));
    await createSmsClient(settings()).send('+254712345678', 'hi');
    assert.equal(captured[0]?.form.get('to'), '+254712345678');
  });

  test('non-ASCII text is sent as is', async () => {
    const { captured } = interceptSend(201, recipients(recipient(101, 'Success')));
    await createSmsClient(settings()).send(STORED_NUMBER, 'Asante Renée — KES 1,500 ✓');
    assert.equal(captured[0]?.form.get('message'), 'Asante Renée — KES 1,500 ✓');
  });
});

describe('answers', () => {
  for (const [statusCode, status] of [[100, 'Processed'], [101, 'Success'], [102, 'Queued']] as const) {
    test(`statusCode ${statusCode} (${status}) in a 201 -> accepted, returns the messageId`, async () => {
      interceptSend(201, recipients(recipient(statusCode, status, `ATXid_${statusCode}`)));
      const result = await createSmsClient(settings()).send(STORED_NUMBER, 'hi');
      assert.deepEqual(result, { messageId: `ATXid_${statusCode}`, statusCode });
    });
  }

  test('statusCode given as a string is still read', async () => {
    interceptSend(201, { SMSMessageData: { Message: 'Sent to 1/1', Recipients: [{ statusCode: '101', number: `+${STORED_NUMBER}`, status: 'Success', messageId: 'ATXid_str' }] } });
    const result = await createSmsClient(settings()).send(STORED_NUMBER, 'hi');
    assert.deepEqual(result, { messageId: 'ATXid_str', statusCode: 101 });
  });

  for (const [statusCode, status] of [[403, 'InvalidPhoneNumber'], [405, 'InsufficientBalance'], [406, 'UserInBlacklist']] as const) {
    test(`statusCode ${statusCode} (${status}) in a 201 -> ProviderError, not retryable, code '${statusCode}'`, async () => {
      interceptSend(201, recipients(recipient(statusCode, status, 'None')));
      const error = await providerError(createSmsClient(settings()).send(STORED_NUMBER, 'hi'));
      assert.equal(error.retryable, false);
      assert.equal(error.code, String(statusCode));
      assert.equal(error.message, status);
    });
  }

  for (const [statusCode, status] of [[500, 'InternalServerError'], [502, 'RejectedByGateway']] as const) {
    test(`statusCode ${statusCode} (${status}) in a 201 -> ProviderError, retryable`, async () => {
      interceptSend(201, recipients(recipient(statusCode, status, 'None')));
      const error = await providerError(createSmsClient(settings()).send(STORED_NUMBER, 'hi'));
      assert.equal(error.retryable, true);
      assert.equal(error.code, String(statusCode));
    });
  }

  test('a 201 with no recipient (e.g. InvalidSenderId) -> ProviderError, not retryable, with AT\'s message', async () => {
    interceptSend(201, { SMSMessageData: { Message: 'InvalidSenderId', Recipients: [] } });
    const error = await providerError(createSmsClient(settings({ senderId: 'NOTMINE' })).send(STORED_NUMBER, 'hi'));
    assert.equal(error.retryable, false);
    assert.equal(error.message, 'InvalidSenderId');
  });

  test('a 200 (not 201) carrying an accepted send is a success, not a retry that would send twice', async () => {
    interceptSend(200, recipients(recipient(101, 'Success', 'ATXid_200ok')));
    const result = await createSmsClient(settings()).send(STORED_NUMBER, 'hello');
    assert.equal(result.messageId, 'ATXid_200ok');
  });

  test('HTTP 500 from the API -> ProviderError, retryable', async () => {
    interceptSend(500, 'Internal Server Error');
    const error = await providerError(createSmsClient(settings()).send(STORED_NUMBER, 'hi'));
    assert.equal(error.retryable, true);
    assert.equal(error.httpStatus, 500);
  });

  test('HTTP 401 (bad API key) -> ProviderError, not retryable', async () => {
    interceptSend(401, 'The supplied authentication is invalid');
    const error = await providerError(createSmsClient(settings()).send(STORED_NUMBER, 'hi'));
    assert.equal(error.retryable, false);
    assert.equal(error.httpStatus, 401);
    assert.equal(error.message, 'The supplied authentication is invalid');
  });

  test('a reply slower than timeoutMs -> TransportError timeout, retryable', async () => {
    const scope = nock(LIVE_HOST).post('/version1/messaging').delay(1_000).reply(201, recipients(recipient(101, 'Success')));
    const error = await transportError(createSmsClient(settings({ timeoutMs: 200 })).send(STORED_NUMBER, 'hi'));
    assert.equal(error.reason, 'timeout');
    assert.equal(error.retryable, true);
    assert.ok(scope.isDone(), 'the request was made');
  });

  test('a connection error -> TransportError network, retryable', async () => {
    nock(LIVE_HOST).post('/version1/messaging').replyWithError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
    const error = await transportError(createSmsClient(settings()).send(STORED_NUMBER, 'hi'));
    assert.equal(error.reason, 'network');
    assert.equal(error.retryable, true);
  });

  test('a number the SDK refuses -> ProviderError invalid_number, not retryable, no request', async () => {
    const { captured } = interceptSend(201, recipients(recipient(101, 'Success')));
    const error = await providerError(createSmsClient(settings()).send('12345', 'hi'));
    assert.equal(error.retryable, false);
    assert.equal(error.code, 'invalid_number');
    assert.equal(captured.length, 0);
  });
});

describe('not configured', () => {
  for (const [name, overrides] of [
    ['no API key', { apiKey: undefined }],
    ['no username', { username: undefined }],
  ] as const) {
    test(`${name} -> TransportError not_configured, not retryable, no request`, async () => {
      const { captured, scope } = interceptSend(201, recipients(recipient(101, 'Success')));
      const client = createSmsClient(settings(overrides));
      assert.equal(client.configured, false);
      const error = await transportError(client.send(STORED_NUMBER, 'hi'));
      assert.equal(error.reason, 'not_configured');
      assert.equal(error.retryable, false);
      assert.equal(captured.length, 0);
      assert.equal(scope.isDone(), false);
    });
  }
});
