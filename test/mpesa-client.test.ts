/**
 * The Daraja (M-PESA Express) client against a fake Daraja server over real HTTP
 * (test/fakes/daraja.ts), and the STK callback parser. Sandbox values from PROVIDERS.md.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import { ProviderError, TransportError } from '../src/providers/errors.js';
import {
  createDarajaClient,
  darajaTimestamp,
  stkPassword,
  type DarajaClient,
  type DarajaSettings,
  type StkPushRequest,
} from '../src/providers/mpesa/client.js';
import { parseStkCallback } from '../src/providers/mpesa/schemas.js';
import { callbackBody, startFakeDaraja, type FakeDaraja, type RecordedRequest } from './fakes/daraja.js';
import { providerError as providerErrorFor, transportError as transportErrorFor } from './helpers/provider-errors.js';

const providerError = (promise: Promise<unknown>) => providerErrorFor(promise, 'mpesa');
const transportError = (promise: Promise<unknown>) => transportErrorFor(promise, 'mpesa');

const SHORTCODE = '174379';
const PASSKEY = 'bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919';
const PHONE = '254708374149';
const CONSUMER_KEY = 'fakeConsumerKeyA1b2C3d4';
const CONSUMER_SECRET = 'fakeConsumerSecretZ9y8X7w6';
const CALLBACK_URL = 'https://pay.invoiceiq.example/callbacks/stk/Zq81fN0xT4';
/** 09:15:30 UTC = 12:15:30 in Nairobi. */
const FIXED = Date.parse('2026-11-22T09:15:30Z');
const FIXED_TIMESTAMP = '20261122121530';

let daraja: FakeDaraja;
let clock = FIXED;

before(async () => {
  daraja = await startFakeDaraja({ consumerKey: CONSUMER_KEY, consumerSecret: CONSUMER_SECRET });
});

after(async () => {
  await daraja.close();
});

beforeEach(() => {
  daraja.reset();
  clock = FIXED;
});

function settings(overrides: Partial<DarajaSettings> = {}): DarajaSettings {
  return {
    baseUrl: daraja.baseUrl,
    consumerKey: CONSUMER_KEY,
    consumerSecret: CONSUMER_SECRET,
    shortcode: SHORTCODE,
    passkey: PASSKEY,
    transactionType: 'CustomerPayBillOnline',
    partyB: undefined,
    timeoutMs: 5_000,
    now: () => new Date(clock),
    ...overrides,
  };
}

function client(overrides: Partial<DarajaSettings> = {}): DarajaClient {
  return createDarajaClient(settings(overrides));
}

function pushRequest(overrides: Partial<StkPushRequest> = {}): StkPushRequest {
  return { amount: 1500, phone: PHONE, accountReference: 'INV-0007', description: 'Invoice 0007', callbackUrl: CALLBACK_URL, ...overrides };
}

function bearerOf(request: RecordedRequest): string {
  const header = request.headers.authorization;
  assert.ok(typeof header === 'string' && header.startsWith('Bearer '), 'a Bearer token');
  return header.slice('Bearer '.length);
}

function onlyPush(): RecordedRequest {
  const pushes = daraja.pushes();
  assert.equal(pushes.length, 1, 'exactly one STK push request');
  const [push] = pushes;
  assert.ok(push);
  return push;
}


describe('Timestamp and Password', () => {
  test('Timestamp is YYYYMMDDHHmmss in Nairobi time (UTC+3)', () => {
    assert.equal(darajaTimestamp(new Date(FIXED)), FIXED_TIMESTAMP);
    // Crossing midnight and the new year in Nairobi while still the old day in UTC.
    assert.equal(darajaTimestamp(new Date('2026-12-31T22:30:05Z')), '20270101013005');
    assert.equal(darajaTimestamp(new Date('2027-03-01T00:00:00Z')), '20270301030000');
  });

  test('Password is base64(shortcode + passkey + timestamp)', () => {
    const password = stkPassword(SHORTCODE, PASSKEY, FIXED_TIMESTAMP);
    assert.equal(Buffer.from(password, 'base64').toString('utf8'), `${SHORTCODE}${PASSKEY}${FIXED_TIMESTAMP}`);
    assert.match(password, /^[A-Za-z0-9+/]+={0,2}$/);
  });
});

describe('STK push request', () => {
  test('OAuth then push: Basic and Bearer headers, every body field, the accepted answer', async () => {
    daraja.queuePush({ kind: 'ok', checkoutRequestId: 'ws_CO_221120261215301234', merchantRequestId: '29115-34620561-1', customerMessage: 'Success. Request accepted for processing' });
    const accepted = await client().stkPush(pushRequest());

    assert.deepEqual(accepted, {
      merchantRequestId: '29115-34620561-1',
      checkoutRequestId: 'ws_CO_221120261215301234',
      customerMessage: 'Success. Request accepted for processing',
    });

    const [oauth] = daraja.oauthRequests();
    assert.ok(oauth);
    assert.equal(oauth.method, 'GET');
    assert.equal(oauth.path, '/oauth/v1/generate?grant_type=client_credentials');
    assert.equal(oauth.headers.authorization, `Basic ${Buffer.from(`${CONSUMER_KEY}:${CONSUMER_SECRET}`).toString('base64')}`);

    const push = onlyPush();
    assert.equal(push.method, 'POST');
    assert.equal(push.path, '/mpesa/stkpush/v1/processrequest');
    assert.equal(bearerOf(push), daraja.tokens[0]);
    assert.match(String(push.headers['content-type']), /^application\/json/);
    assert.deepEqual(push.body, {
      BusinessShortCode: SHORTCODE,
      Password: stkPassword(SHORTCODE, PASSKEY, FIXED_TIMESTAMP),
      Timestamp: FIXED_TIMESTAMP,
      TransactionType: 'CustomerPayBillOnline',
      Amount: 1500,
      PartyA: PHONE,
      PartyB: SHORTCODE,
      PhoneNumber: PHONE,
      CallBackURL: CALLBACK_URL,
      AccountReference: 'INV-0007',
      TransactionDesc: 'Invoice 0007',
    });
    const decoded = Buffer.from(String(push.body.Password), 'base64').toString('utf8');
    assert.equal(decoded, `${SHORTCODE}${PASSKEY}${String(push.body.Timestamp)}`, 'the Password carries the same Timestamp as the body');
  });

  test('the fake hands out a unique ws_CO_ CheckoutRequestID per push', async () => {
    const mpesa = client();
    const first = await mpesa.stkPush(pushRequest());
    const second = await mpesa.stkPush(pushRequest());
    assert.match(first.checkoutRequestId, /^ws_CO_/);
    assert.notEqual(first.checkoutRequestId, second.checkoutRequestId);
  });

  test('till (buy goods): TransactionType and PartyB = the till number', async () => {
    await client({ transactionType: 'CustomerBuyGoodsOnline', partyB: '600980' }).stkPush(pushRequest());
    const push = onlyPush();
    assert.equal(push.body.TransactionType, 'CustomerBuyGoodsOnline');
    assert.equal(push.body.PartyB, '600980');
    assert.equal(push.body.BusinessShortCode, SHORTCODE);
    assert.equal(push.body.PartyA, PHONE);
  });

  test('Amount: whole numbers 1..250000 go out; anything else is refused locally, no request', async () => {
    const mpesa = client();
    await mpesa.stkPush(pushRequest({ amount: 1 }));
    await mpesa.stkPush(pushRequest({ amount: 250_000 }));
    assert.deepEqual(daraja.pushes().map((p) => p.body.Amount), [1, 250_000]);

    daraja.reset();
    const fresh = client();
    for (const amount of [0, -5, 250_001, 10.5, 99.99, Number.NaN, Number.POSITIVE_INFINITY]) {
      const error = await providerError(fresh.stkPush(pushRequest({ amount })));
      assert.equal(error.code, 'invalid_amount', `amount ${amount}`);
      assert.equal(error.retryable, false);
      assert.equal(error.httpStatus, undefined);
    }
    assert.equal(daraja.requests.length, 0, 'no OAuth and no push for a refused amount');
  });

  test('AccountReference: up to 12 characters go out; 13 (or none) refused locally, no request', async () => {
    await client().stkPush(pushRequest({ accountReference: 'INV-00000012' }));
    assert.equal(onlyPush().body.AccountReference, 'INV-00000012');

    daraja.reset();
    const fresh = client();
    for (const accountReference of ['INV-000000013', '']) {
      const error = await providerError(fresh.stkPush(pushRequest({ accountReference })));
      assert.equal(error.code, 'invalid_account_reference');
      assert.equal(error.retryable, false);
    }
    assert.equal(daraja.requests.length, 0);
  });

  test('TransactionDesc: trimmed, cut to 13 characters, never empty', async () => {
    const mpesa = client();
    const cases: Array<[string, string]> = [
      ['  Payment for invoice INV-0007  ', 'Payment for i'],
      ['Invoice 0007', 'Invoice 0007'],
      ['Thirteen char', 'Thirteen char'],
      ['Pay invoice  7', 'Pay invoice'],
      ['', 'Invoice'],
      ['     ', 'Invoice'],
    ];
    for (const [description] of cases) await mpesa.stkPush(pushRequest({ description }));
    assert.deepEqual(
      daraja.pushes().map((p) => p.body.TransactionDesc),
      cases.map(([, expected]) => expected),
    );
    for (const push of daraja.pushes()) assert.ok(String(push.body.TransactionDesc).length <= 13);
  });

  test('a 200 whose ResponseCode is not "0" is a ProviderError with that code', async () => {
    daraja.queuePush({ kind: 'rejected', responseCode: '1', description: 'Rejected by the system' });
    const error = await providerError(client().stkPush(pushRequest()));
    assert.equal(error.code, '1');
    assert.equal(error.httpStatus, 200);
    assert.equal(error.retryable, false);
    assert.equal(error.message, 'Rejected by the system');
  });

  test('a 200 that is not an STK answer is a ProviderError, not retried (the push may have gone out)', async () => {
    daraja.queuePush({ kind: 'raw', status: 200, body: '<html>maintenance</html>' });
    const error = await providerError(client().stkPush(pushRequest()));
    assert.equal(error.retryable, false);
    assert.equal(daraja.pushes().length, 1);
  });
});

describe('token', () => {
  test('one token serves many calls', async () => {
    const mpesa = client();
    await mpesa.stkPush(pushRequest());
    await mpesa.stkPush(pushRequest());
    await mpesa.stkQuery('ws_CO_1');
    assert.equal(daraja.tokensIssued, 1);
    assert.equal(daraja.oauthRequests().length, 1);
    const bearers = [...daraja.pushes(), ...daraja.queries()].map(bearerOf);
    assert.deepEqual(bearers, [daraja.tokens[0], daraja.tokens[0], daraja.tokens[0]]);
  });

  test('refreshed once fewer than 60 s of expires_in remain (by the injected clock)', async () => {
    daraja.setExpiresIn('3599');
    const mpesa = client();
    await mpesa.stkPush(pushRequest());
    clock = FIXED + (3599 - 61) * 1000; // 61 s left: still good
    await mpesa.stkPush(pushRequest());
    assert.equal(daraja.tokensIssued, 1);
    clock = FIXED + (3599 - 59) * 1000; // 59 s left: refresh
    await mpesa.stkPush(pushRequest());
    assert.equal(daraja.tokensIssued, 2);
    assert.deepEqual(daraja.pushes().map(bearerOf), [daraja.tokens[0], daraja.tokens[0], daraja.tokens[1]]);
    assert.equal(daraja.pushes()[2]?.body.Timestamp, darajaTimestamp(new Date(clock)), 'Timestamp follows the injected clock');
  });

  test('a short expires_in (numeric) is honoured too', async () => {
    daraja.queueOAuth({ kind: 'ok', expiresIn: 120 });
    const mpesa = client();
    await mpesa.stkPush(pushRequest());
    clock = FIXED + 59_000;
    await mpesa.stkPush(pushRequest());
    assert.equal(daraja.tokensIssued, 1);
    clock = FIXED + 61_000;
    await mpesa.stkPush(pushRequest());
    assert.equal(daraja.tokensIssued, 2);
  });

  test('concurrent callers share one token request', async () => {
    const mpesa = client();
    const results = await Promise.all([
      mpesa.stkPush(pushRequest()),
      mpesa.stkPush(pushRequest()),
      mpesa.stkQuery('ws_CO_1'),
      mpesa.stkPush(pushRequest()),
      mpesa.stkQuery('ws_CO_2'),
    ]);
    assert.equal(results.length, 5);
    assert.equal(daraja.oauthRequests().length, 1);
    assert.equal(daraja.tokensIssued, 1);
  });

  test('404.001.03 (invalid token): refresh once, retry once', async () => {
    const mpesa = client();
    await mpesa.stkPush(pushRequest());
    daraja.revokeTokens();
    const accepted = await mpesa.stkPush(pushRequest());
    assert.match(accepted.checkoutRequestId, /^ws_CO_/);
    assert.equal(daraja.tokensIssued, 2);
    assert.deepEqual(daraja.pushes().map(bearerOf), [daraja.tokens[0], daraja.tokens[0], daraja.tokens[1]]);
    // The same Password rules on the retry.
    const retry = daraja.pushes()[2];
    assert.ok(retry);
    assert.equal(retry.body.Password, stkPassword(SHORTCODE, PASSKEY, String(retry.body.Timestamp)));
  });

  test('404.001.03 on a query: refresh once, retry once', async () => {
    const mpesa = client();
    await mpesa.stkQuery('ws_CO_1');
    daraja.revokeTokens();
    daraja.queueQuery({ kind: 'result', resultCode: '0' });
    assert.deepEqual(await mpesa.stkQuery('ws_CO_1'), { state: 'completed', resultCode: 0, resultDesc: 'The service request is processed successfully.' });
    assert.equal(daraja.tokensIssued, 2);
    assert.equal(daraja.queries().length, 3);
  });

  test('404.001.03 again after the refresh is an error: only one refresh, only one retry', async () => {
    const mpesa = client();
    daraja.queuePush(
      { kind: 'error', status: 404, code: '404.001.03', message: 'Invalid Access Token' },
      { kind: 'error', status: 404, code: '404.001.03', message: 'Invalid Access Token' },
    );
    const error = await providerError(mpesa.stkPush(pushRequest()));
    assert.equal(error.code, '404.001.03');
    assert.equal(error.httpStatus, 404);
    assert.equal(error.retryable, false);
    assert.equal(daraja.pushes().length, 2);
    assert.equal(daraja.tokensIssued, 2);
  });

  test('concurrent calls refused with 404.001.03 share one refresh', async () => {
    const mpesa = client();
    await mpesa.stkPush(pushRequest());
    daraja.revokeTokens();
    await Promise.all([mpesa.stkPush(pushRequest()), mpesa.stkPush(pushRequest()), mpesa.stkPush(pushRequest())]);
    assert.equal(daraja.tokensIssued, 2);
  });

  test('wrong consumer secret: OAuth answers 401, a final ProviderError, no push, no secret in the message', async () => {
    const error = await providerError(client({ consumerSecret: 'wrongSecretValue123' }).stkPush(pushRequest()));
    assert.equal(error.httpStatus, 401);
    assert.equal(error.retryable, false);
    assert.equal(daraja.pushes().length, 0);
    assert.ok(!error.message.includes('wrongSecretValue123'));
  });
});

describe('STK query', () => {
  test('500.001.1001 "being processed" means pending; the request carries the query fields', async () => {
    daraja.queueQuery({ kind: 'pending' });
    const result = await client().stkQuery('ws_CO_221120261215301234');
    assert.deepEqual(result, { state: 'pending' });

    const [query] = daraja.queries();
    assert.ok(query);
    assert.equal(query.method, 'POST');
    assert.equal(query.path, '/mpesa/stkpushquery/v1/query');
    assert.equal(bearerOf(query), daraja.tokens[0]);
    assert.deepEqual(query.body, {
      BusinessShortCode: SHORTCODE,
      Password: stkPassword(SHORTCODE, PASSKEY, FIXED_TIMESTAMP),
      Timestamp: FIXED_TIMESTAMP,
      CheckoutRequestID: 'ws_CO_221120261215301234',
    });
  });

  test('a result: ResultCode "1032" (a string) comes back as the number 1032', async () => {
    daraja.queueQuery({ kind: 'result', resultCode: '1032', resultDesc: 'Request cancelled by user' });
    assert.deepEqual(await client().stkQuery('ws_CO_1'), { state: 'completed', resultCode: 1032, resultDesc: 'Request cancelled by user' });
  });

  test('a result: ResultCode "0" is 0 (paid)', async () => {
    daraja.queueQuery({ kind: 'result', resultCode: '0', resultDesc: 'The service request is processed successfully.' });
    assert.deepEqual(await client().stkQuery('ws_CO_1'), { state: 'completed', resultCode: 0, resultDesc: 'The service request is processed successfully.' });
  });

  test('500.001.1001 with an unrelated message ("Wrong credentials") is an error, not pending', async () => {
    daraja.queueQuery({ kind: 'error', status: 500, code: '500.001.1001', message: 'Wrong credentials' });
    const error = await providerError(client().stkQuery('ws_CO_1'));
    assert.equal(error.code, '500.001.1001');
  });

  test('other query errors are errors (400.002.02 final)', async () => {
    daraja.queueQuery({ kind: 'error', status: 400, code: '400.002.02', message: 'Bad Request - Invalid CheckoutRequestID' });
    const error = await providerError(client().stkQuery('nope'));
    assert.equal(error.code, '400.002.02');
    assert.equal(error.retryable, false);
  });
});

describe('error classification', () => {
  test('400.002.02 invalid request: final', async () => {
    daraja.queuePush({ kind: 'error', status: 400, code: '400.002.02', message: 'Bad Request - Invalid PhoneNumber' });
    const error = await providerError(client().stkPush(pushRequest()));
    assert.equal(error.code, '400.002.02');
    assert.equal(error.httpStatus, 400);
    assert.equal(error.retryable, false);
    assert.equal(error.message, 'Bad Request - Invalid PhoneNumber');
  });

  test('400.002.02 stays final whatever the HTTP status; an error body inside a 200 is an error too', async () => {
    const mpesa = client();
    daraja.queuePush(
      { kind: 'error', status: 500, code: '400.002.02', message: 'Bad Request - Invalid Amount' },
      { kind: 'raw', status: 200, body: JSON.stringify({ requestId: 'r-1', errorCode: '500.003.02', errorMessage: 'Spike arrest violation' }) },
    );
    const first = await providerError(mpesa.stkPush(pushRequest()));
    assert.equal(first.code, '400.002.02');
    assert.equal(first.retryable, false);
    const second = await providerError(mpesa.stkPush(pushRequest()));
    assert.equal(second.code, '500.003.02');
    assert.equal(second.httpStatus, 200);
    assert.equal(second.retryable, true);
  });

  test('500.003.02 spike arrest: retryable (whatever the HTTP status)', async () => {
    const mpesa = client();
    daraja.queuePush(
      { kind: 'error', status: 500, code: '500.003.02', message: 'Spike arrest violation', retryAfter: 3 },
      { kind: 'error', status: 400, code: '500.003.02', message: 'Spike arrest violation' },
    );
    const first = await providerError(mpesa.stkPush(pushRequest()));
    assert.equal(first.code, '500.003.02');
    assert.equal(first.retryable, true);
    assert.equal(first.retryAfterSeconds, 3);
    const second = await providerError(mpesa.stkPush(pushRequest()));
    assert.equal(second.retryable, true);
  });

  test('500.003.03 quota: retryable', async () => {
    daraja.queuePush({ kind: 'error', status: 400, code: '500.003.03', message: 'Quota violation' });
    const error = await providerError(client().stkPush(pushRequest()));
    assert.equal(error.code, '500.003.03');
    assert.equal(error.retryable, true);
  });

  test('500.001.1001 on a push (already in process for this phone): retryable, not "pending"', async () => {
    daraja.queuePush({ kind: 'error', status: 500, code: '500.001.1001', message: 'Unable to lock subscriber, a transaction is already in process for the current subscriber' });
    const error = await providerError(client().stkPush(pushRequest()));
    assert.equal(error.code, '500.001.1001');
    assert.equal(error.retryable, true);
  });

  test('a bare HTTP 500 and a 429: retryable; 401 and 403: final', async () => {
    const mpesa = client();
    daraja.queuePush(
      { kind: 'raw', status: 500, body: 'Internal Server Error' },
      { kind: 'raw', status: 429, body: '' },
      { kind: 'raw', status: 401, body: '' },
      { kind: 'raw', status: 403, body: 'Forbidden' },
    );
    const outcomes: Array<[number | undefined, boolean]> = [];
    for (let i = 0; i < 4; i += 1) {
      const error = await providerError(mpesa.stkPush(pushRequest()));
      outcomes.push([error.httpStatus, error.retryable]);
    }
    assert.deepEqual(outcomes, [
      [500, true],
      [429, true],
      [401, false],
      [403, false],
    ]);
  });

  test('timeout: a TransportError "timeout", retryable', async () => {
    const mpesa = client({ timeoutMs: 300 });
    await mpesa.stkPush(pushRequest()); // token in hand
    daraja.queuePush({ kind: 'hang' });
    const started = performance.now();
    const error = await transportError(mpesa.stkPush(pushRequest()));
    assert.equal(error.reason, 'timeout');
    assert.equal(error.retryable, true);
    assert.ok(performance.now() - started < 3_000, 'gave up near the configured timeout');
  });

  test('a hanging OAuth times out too, and no push goes out', async () => {
    daraja.queueOAuth({ kind: 'hang' });
    const error = await transportError(client({ timeoutMs: 300 }).stkQuery('ws_CO_1'));
    assert.equal(error.reason, 'timeout');
    assert.equal(daraja.queries().length, 0);
  });

  test('connection refused: a TransportError "network", retryable', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));

    const error = await transportError(client({ baseUrl: `http://127.0.0.1:${port}` }).stkPush(pushRequest()));
    assert.equal(error.reason, 'network');
    assert.equal(error.retryable, true);
  });

  test('not configured (any of key, secret, shortcode, passkey missing): not_configured, no request', async () => {
    const missing: Array<Partial<DarajaSettings>> = [
      { consumerKey: undefined },
      { consumerSecret: undefined },
      { shortcode: undefined },
      { passkey: undefined },
      { passkey: '' },
    ];
    for (const overrides of missing) {
      const mpesa = client(overrides);
      assert.equal(mpesa.configured, false, JSON.stringify(Object.keys(overrides)));
      const push = await transportError(mpesa.stkPush(pushRequest()));
      assert.equal(push.reason, 'not_configured');
      assert.equal(push.retryable, false);
      const query = await transportError(mpesa.stkQuery('ws_CO_1'));
      assert.equal(query.reason, 'not_configured');
    }
    assert.equal(client().configured, true);
    assert.equal(daraja.requests.length, 0);
  });

  test('no passkey, secret, Password or token in error messages, even when Daraja echoes them', async () => {
    const token = 'echoedTokenValue0123456789';
    daraja.queueOAuth({ kind: 'ok', accessToken: token });
    const password = stkPassword(SHORTCODE, PASSKEY, FIXED_TIMESTAMP);
    daraja.queuePush({ kind: 'error', status: 400, code: '400.002.02', message: `Bad Request - Invalid Password ${password} for ${PASSKEY} / ${CONSUMER_SECRET} with ${token}` });
    const error = await providerError(client().stkPush(pushRequest()));
    assert.match(error.message, /^Bad Request - Invalid Password/);
    for (const secret of [password, PASSKEY, CONSUMER_SECRET, token]) assert.ok(!error.message.includes(secret), 'a secret leaked into the message');
  });
});

describe('parseStkCallback', () => {
  test('success: items in any order, Balance without a Value, numbers become strings where they are identifiers', () => {
    const body = callbackBody({
      checkoutRequestId: 'ws_CO_191220191020363925',
      merchantRequestId: '29115-34620561-1',
      resultCode: 0,
      resultDesc: 'The service request is processed successfully.',
      amount: 1500,
      receipt: 'NLJ7RT61SV',
      phone: PHONE,
      transactionDate: '20191219102115',
    });
    const items = body.Body.stkCallback.CallbackMetadata?.Item;
    assert.ok(items);
    const balance = items.find((item) => item.Name === 'Balance');
    assert.ok(balance && !('Value' in balance), 'Balance comes without a Value');
    assert.equal(typeof items.find((item) => item.Name === 'PhoneNumber')?.Value, 'number');
    // Shuffle: PhoneNumber, Balance, MpesaReceiptNumber, TransactionDate, Amount.
    const order = ['PhoneNumber', 'Balance', 'MpesaReceiptNumber', 'TransactionDate', 'Amount'];
    const shuffled = order.map((name) => items.find((item) => item.Name === name));
    const wire: unknown = JSON.parse(JSON.stringify({ Body: { stkCallback: { ...body.Body.stkCallback, CallbackMetadata: { Item: shuffled } } } }));

    const parsed = parseStkCallback(wire);
    assert.deepEqual(parsed, {
      ok: true,
      value: {
        merchantRequestId: '29115-34620561-1',
        checkoutRequestId: 'ws_CO_191220191020363925',
        resultCode: 0,
        resultDesc: 'The service request is processed successfully.',
        amount: 1500,
        receipt: 'NLJ7RT61SV',
        phone: '254708374149',
        transactionDate: '20191219102115',
      },
    });
  });

  test('success with items missing: those come back null', () => {
    const parsed = parseStkCallback({
      Body: {
        stkCallback: {
          MerchantRequestID: 'm-1',
          CheckoutRequestID: 'ws_CO_1',
          ResultCode: 0,
          ResultDesc: 'ok',
          CallbackMetadata: { Item: [{ Name: 'MpesaReceiptNumber', Value: 'NLJ7RT61SV' }, { Name: 'Balance' }] },
        },
      },
    });
    assert.ok(parsed.ok);
    assert.equal(parsed.value.receipt, 'NLJ7RT61SV');
    assert.equal(parsed.value.amount, null);
    assert.equal(parsed.value.phone, null);
    assert.equal(parsed.value.transactionDate, null);
  });

  test('failure (1032 cancelled): no metadata, nulls', () => {
    const body = callbackBody({ checkoutRequestId: 'ws_CO_2', merchantRequestId: 'm-2', resultCode: 1032, resultDesc: 'Request cancelled by user', amount: 1500 });
    assert.equal(body.Body.stkCallback.CallbackMetadata, undefined, 'Safaricom sends metadata only on success');
    assert.deepEqual(parseStkCallback(JSON.parse(JSON.stringify(body)) as unknown), {
      ok: true,
      value: {
        merchantRequestId: 'm-2',
        checkoutRequestId: 'ws_CO_2',
        resultCode: 1032,
        resultDesc: 'Request cancelled by user',
        amount: null,
        receipt: null,
        phone: null,
        transactionDate: null,
      },
    });
  });

  test('malformed bodies: ok false with a reason, never a throw', () => {
    const good = { MerchantRequestID: 'm', CheckoutRequestID: 'ws_CO_1', ResultCode: 0, ResultDesc: 'ok' };
    const bad: unknown[] = [
      null,
      undefined,
      'Body',
      42,
      [],
      {},
      { Body: {} },
      { Body: { stkCallback: null } },
      { Body: { stkCallback: { ...good, CheckoutRequestID: undefined } } },
      { Body: { stkCallback: { ...good, CheckoutRequestID: '' } } },
      { Body: { stkCallback: { ...good, MerchantRequestID: 7 } } },
      { Body: { stkCallback: { ...good, ResultCode: 'abc' } } },
      { Body: { stkCallback: { ...good, ResultCode: null } } },
      { Body: { stkCallback: { ...good, ResultDesc: undefined } } },
      { Body: { stkCallback: { ...good, CallbackMetadata: { Item: { Name: 'Amount', Value: 1 } } } } },
      { Body: { stkCallback: { ...good, CallbackMetadata: { Item: [{ Value: 1 }] } } } },
      { Body: { stkCallback: { ...good, CallbackMetadata: { Item: [{ Name: 'Amount', Value: { nested: 1 } }] } } } },
    ];
    for (const body of bad) {
      const parsed = parseStkCallback(body);
      assert.equal(parsed.ok, false, `accepted ${JSON.stringify(body)}`);
      if (!parsed.ok) assert.ok(parsed.error.length > 0);
    }
    assert.equal(parseStkCallback({ Body: { stkCallback: good } }).ok, true, 'the control case parses');
  });
});
