import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig, type Config } from '../src/config.js';
import { productionEnv } from './helpers/app.js';
import { runNode } from './helpers/process.js';


/** Every secret production insists on, with distinctive values that must never be echoed. */
const productionSecrets = {
  DATABASE_URL: 'postgres://invoiceiq:Db-PaSsWoRd-77@db.internal:5432/invoiceiq',
  WABA_TOKEN: 'EAAG-waba-token-value-1234567890',
  WABA_PHONE_ID: '109876543210987',
  WABA_VERIFY_TOKEN: 'verify-token-value-abcdef',
  WABA_APP_SECRET: 'app-secret-value-0f0f0f0f',
  SMS_API_KEY: 'atsk-sms-api-key-value-999',
  SMS_USERNAME: 'invoiceiq-sms-user',
  SMS_REPORT_TOKEN: 'sms-report-token-value-0123456789abcdef',
  MPESA_CONSUMER_KEY: 'mpesa-consumer-key-value-111',
  MPESA_CONSUMER_SECRET: 'mpesa-consumer-secret-value-222',
  MPESA_SHORTCODE: '174379',
  MPESA_PASSKEY: 'bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919',
  MPESA_CALLBACK_URL: 'https://invoiceiq.example.com/mpesa/callback',
  STATS_API_TOKEN: 'stats-api-token-value-that-is-long-enough-0123456789',
} as const;

const requiredInProduction = Object.keys(productionSecrets);

function configError(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error;
  }
  assert.fail('loadConfig accepted an invalid environment');
}

function problemFor(error: ConfigError, name: string): string {
  const found = error.problems.find((problem) => problem.startsWith(`${name} `));
  assert.ok(found, `no problem names ${name}; problems: ${JSON.stringify(error.problems)}`);
  return found;
}

test('defaults: port 8080, embedded database in ./.data, WhatsApp and M-Pesa sandbox endpoints', () => {
  const config = loadConfig({});
  assert.equal(config.port, 8080);
  assert.equal(config.appEnv, 'development');
  assert.deepEqual(config.database, { kind: 'embedded', dataDir: './.data' });
  assert.equal(config.whatsapp.apiBaseUrl, 'https://graph.facebook.com');
  assert.equal(config.whatsapp.apiVersion, 'v21.0');
  assert.equal(config.mpesa.environment, 'sandbox');
  assert.equal(config.mpesa.apiBaseUrl, 'https://sandbox.safaricom.co.ke');
  assert.equal(config.sms.useSandbox, false);
});

test('an empty variable means unset: PORT= gives the default port, not port 0', () => {
  assert.equal(loadConfig({ PORT: '' }).port, 8080);
  assert.equal(loadConfig({ PORT: '  ' }).port, 8080);
  assert.deepEqual(loadConfig({ DATABASE_URL: '' }).database, { kind: 'embedded', dataDir: './.data' });
  assert.equal(loadConfig({ PORT: '0' }).port, 0);
  assert.equal(loadConfig({ PORT: '3000' }).port, 3000);
});

test('DATABASE_URL selects Postgres; DATA_DIR moves the embedded database', () => {
  assert.deepEqual(loadConfig({ DATABASE_URL: 'postgresql://u@h/db', DATABASE_POOL_MAX: '4' }).database, {
    kind: 'postgres',
    url: 'postgresql://u@h/db',
    poolMax: 4,
    idleInTransactionTimeoutMs: 60_000,
    lockTimeoutMs: 15_000,
  });
  const base = { kind: 'postgres', url: 'postgresql://u@h/db', poolMax: 10, idleInTransactionTimeoutMs: 60_000, lockTimeoutMs: 15_000 };
  const idle = (value: string) => loadConfig({ DATABASE_URL: 'postgresql://u@h/db', DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS: value }).database;
  assert.deepEqual(idle('0'), { ...base, idleInTransactionTimeoutMs: 0 });
  assert.deepEqual(idle('15000'), { ...base, idleInTransactionTimeoutMs: 15_000 });
  for (const bad of ['-1', 'soon', '1.5']) assert.throws(() => idle(bad), /DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS/);
  const lock = (value: string) => loadConfig({ DATABASE_URL: 'postgresql://u@h/db', DATABASE_LOCK_TIMEOUT_MS: value }).database;
  assert.deepEqual(lock('0'), { ...base, lockTimeoutMs: 0 });
  assert.deepEqual(lock('5000'), { ...base, lockTimeoutMs: 5_000 });
  for (const bad of ['-1', 'soon', '1.5', '3600001']) assert.throws(() => lock(bad), /DATABASE_LOCK_TIMEOUT_MS/);
  assert.deepEqual(loadConfig({ DATA_DIR: '/var/lib/invoiceiq' }).database, { kind: 'embedded', dataDir: '/var/lib/invoiceiq' });
});

test('the M-Pesa base URL follows MPESA_ENVIRONMENT, and MPESA_API_BASE_URL overrides it', () => {
  assert.equal(loadConfig({ MPESA_ENVIRONMENT: 'sandbox' }).mpesa.apiBaseUrl, 'https://sandbox.safaricom.co.ke');
  assert.equal(loadConfig({ MPESA_ENVIRONMENT: 'production' }).mpesa.apiBaseUrl, 'https://api.safaricom.co.ke');
  assert.equal(
    loadConfig({ MPESA_ENVIRONMENT: 'production', MPESA_API_BASE_URL: 'http://127.0.0.1:9999/daraja/' }).mpesa.apiBaseUrl,
    'http://127.0.0.1:9999/daraja',
  );
  assert.equal(loadConfig({ WABA_API_BASE_URL: 'http://localhost:4010/' }).whatsapp.apiBaseUrl, 'http://localhost:4010');
  problemFor(configError({ MPESA_ENVIRONMENT: 'staging' }), 'MPESA_ENVIRONMENT');
  problemFor(configError({ MPESA_API_BASE_URL: 'ftp://example.com' }), 'MPESA_API_BASE_URL');
});

test('booleans accept true/false/1/0 in any case and reject anything else', () => {
  const accepted: [string, boolean][] = [
    ['true', true],
    ['TRUE', true],
    ['True', true],
    ['1', true],
    [' true ', true],
    ['false', false],
    ['FALSE', false],
    ['False', false],
    ['0', false],
  ];
  for (const [raw, expected] of accepted) {
    assert.equal(loadConfig({ SMS_USE_SANDBOX: raw }).sms.useSandbox, expected, `SMS_USE_SANDBOX=${JSON.stringify(raw)}`);
  }
  for (const raw of ['yes', 'no', 'on', 'off', '2', 't', 'truee', '-1']) {
    const error = configError({ SMS_USE_SANDBOX: raw });
    assert.match(problemFor(error, 'SMS_USE_SANDBOX'), /true, false, 1, 0/);
  }
});

test('the config object is deeply frozen', () => {
  const config = loadConfig({ DATABASE_URL: 'postgres://u@h/db' });
  const nested: readonly object[] = [config, config.database, config.whatsapp, config.sms, config.mpesa, config.stats];
  for (const value of nested) assert.ok(Object.isFrozen(value));
  const writable = config as unknown as { port: number; mpesa: { apiBaseUrl: string }; database: { url: string } };
  assert.throws(() => {
    writable.port = 1;
  }, TypeError);
  assert.throws(() => {
    writable.mpesa.apiBaseUrl = 'https://evil.example.com';
  }, TypeError);
  assert.throws(() => {
    writable.database.url = 'postgres://evil/db';
  }, TypeError);
  assert.equal(config.port, 8080);
  assert.equal(config.mpesa.apiBaseUrl, 'https://sandbox.safaricom.co.ke');
  // Every nested object, however deep, is frozen (not only the ones listed above).
  const unfrozen: string[] = [];
  const walk = (value: unknown, path: string): void => {
    if (value === null || typeof value !== 'object') return;
    if (!Object.isFrozen(value)) unfrozen.push(path);
    for (const [key, inner] of Object.entries(value)) walk(inner, `${path}.${key}`);
  };
  walk(config, 'config');
  assert.deepEqual(unfrozen, []);
});

test('APP_ENV=production with nothing set names every missing secret in one error', () => {
  const error = configError({ APP_ENV: 'production' });
  for (const name of requiredInProduction) {
    assert.match(problemFor(error, name), /required/, name);
    assert.match(error.message, new RegExp(`\\b${name}\\b`));
  }
  assert.equal(error.name, 'ConfigError');
  // Only missing variables are reported: nothing about variables that have defaults.
  for (const problem of error.problems) assert.match(problem, /^[A-Z0-9_]+ is required/, problem);
});

test('APP_ENV=production with blank secrets treats them as missing', () => {
  const blanks = Object.fromEntries(requiredInProduction.map((name) => [name, '   ']));
  const error = configError({ APP_ENV: 'production', ...blanks });
  for (const name of requiredInProduction) assert.match(problemFor(error, name), /required/);
});

test('malformed values are each named, and a wrong value is not reported as missing', () => {
  const error = configError({ PORT: 'abc', MPESA_SHORTCODE: '12', DATABASE_URL: 'mysql://x', WABA_API_VERSION: '21' });
  for (const name of ['PORT', 'MPESA_SHORTCODE', 'DATABASE_URL', 'WABA_API_VERSION']) {
    assert.doesNotMatch(problemFor(error, name), /required/, `${name} is set, so it is malformed, not missing`);
  }
  assert.match(problemFor(error, 'MPESA_SHORTCODE'), /5 to 7 digits/);
  assert.match(problemFor(error, 'DATABASE_URL'), /postgres/);
  assert.match(problemFor(error, 'WABA_API_VERSION'), /v21\.0/);
  assert.equal(error.problems.length, 4, JSON.stringify(error.problems));
  problemFor(configError({ PORT: '70000' }), 'PORT');
  problemFor(configError({ PORT: '80.5' }), 'PORT');
  problemFor(configError({ WABA_PHONE_ID: 'abc' }), 'WABA_PHONE_ID');
  problemFor(configError({ LOG_LEVEL: 'loud' }), 'LOG_LEVEL');
});

test('production rules: https callback, long stats token, no SMS sandbox', () => {
  const error = configError({
    ...productionSecrets,
    APP_ENV: 'production',
    MPESA_ENVIRONMENT: 'production',
    MPESA_CALLBACK_URL: 'http://invoiceiq.example.com/mpesa/callback',
    STATS_API_TOKEN: 'short-token',
    SMS_USE_SANDBOX: 'true',
  });
  assert.match(problemFor(error, 'MPESA_CALLBACK_URL'), /https/);
  assert.match(problemFor(error, 'STATS_API_TOKEN'), /32/);
  assert.match(problemFor(error, 'SMS_USE_SANDBOX'), /false/);
  const others = error.problems.filter((problem) => !/^(MPESA_CALLBACK_URL|STATS_API_TOKEN|SMS_USE_SANDBOX) /.test(problem));
  assert.deepEqual(others, [], 'nothing else is wrong with this environment');
});

test('secret values never appear in the error, even when they are the malformed ones', () => {
  const secretValues = {
    ...productionSecrets,
    DATABASE_URL: 'mysql://root:Hunter2-Db-Secret@db/x',
    WABA_PHONE_ID: 'phone-id-Secret-77',
    MPESA_SHORTCODE: 'Shortcode-Secret-99',
    MPESA_CALLBACK_URL: 'http://callback.example.com/Callback-Secret-55',
    STATS_API_TOKEN: 'Tiny-Secret-3',
    WABA_API_BASE_URL: 'not a url Base-Secret-11',
  };
  const error = configError({ APP_ENV: 'production', ...secretValues });
  assert.ok(error.problems.length >= 6, JSON.stringify(error.problems));
  const everything = `${error.message}\n${error.problems.join('\n')}\n${error.stack ?? ''}`;
  for (const [name, value] of Object.entries(secretValues)) {
    assert.ok(!everything.includes(value), `${name}'s value leaked into the error`);
  }
  for (const marker of ['Hunter2', 'Secret-']) assert.ok(!everything.includes(marker), `${marker} leaked`);
});

test('a full, valid production environment parses', () => {
  const config: Config = loadConfig({ APP_ENV: 'production', MPESA_ENVIRONMENT: 'production', LOG_LEVEL: 'warn', ...productionSecrets });
  assert.equal(config.appEnv, 'production');
  assert.equal(config.logLevel, 'warn');
  assert.deepEqual(config.database, { kind: 'postgres', url: productionSecrets.DATABASE_URL, poolMax: 10, idleInTransactionTimeoutMs: 60_000, lockTimeoutMs: 15_000 });
  assert.equal(config.whatsapp.token, productionSecrets.WABA_TOKEN);
  assert.equal(config.whatsapp.phoneId, productionSecrets.WABA_PHONE_ID);
  assert.equal(config.whatsapp.verifyToken, productionSecrets.WABA_VERIFY_TOKEN);
  assert.equal(config.whatsapp.appSecret, productionSecrets.WABA_APP_SECRET);
  assert.equal(config.sms.apiKey, productionSecrets.SMS_API_KEY);
  assert.equal(config.sms.username, productionSecrets.SMS_USERNAME);
  assert.equal(config.sms.useSandbox, false);
  assert.equal(config.mpesa.consumerKey, productionSecrets.MPESA_CONSUMER_KEY);
  assert.equal(config.mpesa.consumerSecret, productionSecrets.MPESA_CONSUMER_SECRET);
  assert.equal(config.mpesa.shortcode, productionSecrets.MPESA_SHORTCODE);
  assert.equal(config.mpesa.passkey, productionSecrets.MPESA_PASSKEY);
  assert.equal(config.mpesa.callbackUrl, productionSecrets.MPESA_CALLBACK_URL);
  assert.equal(config.mpesa.apiBaseUrl, 'https://api.safaricom.co.ke');
  assert.equal(config.stats.apiToken, productionSecrets.STATS_API_TOKEN);
});

test('main.ts with APP_ENV=production and nothing else exits 1 quickly, naming the problems without a stack trace', async () => {
  // Only what node needs to run: none of the service's variables leak in from this process.
  const env: NodeJS.ProcessEnv = { APP_ENV: 'production' };
  for (const name of ['PATH', 'HOME', 'TMPDIR', 'SYSTEMROOT']) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  const started = performance.now();
  const { code, stdout, stderr } = await runNode(['--import', 'tsx', 'src/main.ts'], env, 15_000);
  assert.equal(code, 1, `exit code; stderr:\n${stderr}`);
  // Generous: start-up of node + tsx alone takes a second or two on a slow machine.
  assert.ok(performance.now() - started < 10_000, 'exits within a few seconds, without waiting on any connection');
  for (const name of requiredInProduction) assert.match(stderr, new RegExp(`\\b${name}\\b`), `stderr names ${name}`);
  assert.doesNotMatch(stderr, /^\s{4}at /m, 'no stack trace');
  assert.doesNotMatch(stdout, /listening/);
});

test('a till needs its till number (MPESA_PARTY_B) in production', async () => {
  const production = productionEnv('x'.repeat(32));
  assert.equal(loadConfig({ ...production, MPESA_TRANSACTION_TYPE: 'till', MPESA_PARTY_B: '5123456' }).mpesa.transactionType, 'CustomerBuyGoodsOnline');
  assert.throws(() => loadConfig({ ...production, MPESA_TRANSACTION_TYPE: 'till' }), (error: unknown) => error instanceof ConfigError && error.problems.some((p) => p.startsWith('MPESA_PARTY_B')));
});

test('no provider timeout the configuration accepts lets a claim expire while its send is in flight', async () => {
  const { CLAIM_RENEW_AFTER_MS, CLAIM_TIMEOUT_SECONDS, LONGEST_PROVIDER_TIMEOUT_MS } = await import('../src/delivery/outbox.js');
  const longest = String(LONGEST_PROVIDER_TIMEOUT_MS);
  const config = loadConfig({ WABA_TIMEOUT_MS: longest, SMS_TIMEOUT_MS: longest });
  assert.equal(config.whatsapp.timeoutMs, LONGEST_PROVIDER_TIMEOUT_MS);
  // One send: claimed or renewed up to CLAIM_RENEW_AFTER_MS before it, then a WhatsApp timeout, then an SMS timeout.
  assert.ok(CLAIM_RENEW_AFTER_MS + config.whatsapp.timeoutMs + config.sms.timeoutMs < CLAIM_TIMEOUT_SECONDS * 1000);
  problemFor(configError({ WABA_TIMEOUT_MS: String(LONGEST_PROVIDER_TIMEOUT_MS + 1) }), 'WABA_TIMEOUT_MS');
  problemFor(configError({ SMS_TIMEOUT_MS: String(LONGEST_PROVIDER_TIMEOUT_MS + 1) }), 'SMS_TIMEOUT_MS');
});

test('INVOICE_MAX_AMOUNT and INVOICE_DUE_DAYS: defaults 250,000 and 7; whole numbers in range, or a clear error', () => {
  assert.deepEqual(loadConfig({}).invoices, { maxAmount: 250_000, dueDays: 7 });
  assert.deepEqual(loadConfig({ INVOICE_MAX_AMOUNT: '1000', INVOICE_DUE_DAYS: '14' }).invoices, { maxAmount: 1000, dueDays: 14 });
  for (const value of ['0', '250001', '1.5', 'lots']) problemFor(configError({ INVOICE_MAX_AMOUNT: value }), 'INVOICE_MAX_AMOUNT');
  for (const value of ['0', '366', 'soon']) problemFor(configError({ INVOICE_DUE_DAYS: value }), 'INVOICE_DUE_DAYS');
});

test('TRUSTED_PROXIES: any private network by default; addresses and networks of either family, or a clear error', () => {
  assert.deepEqual(loadConfig({}).trustedProxies, ['127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '::1/128', 'fc00::/7']);
  assert.deepEqual(loadConfig({ TRUSTED_PROXIES: ' 172.16.0.0/12, fdaa::/16 ,10.1.2.3 ' }).trustedProxies, ['172.16.0.0/12', 'fdaa::/16', '10.1.2.3']);
  for (const bad of ['10.0.0.0/33', 'fdaa::/129', 'proxy.internal', '10.0.0.0/8/1', '10.0.0.0/-1', '10.0.0/8']) {
    assert.match(problemFor(configError({ TRUSTED_PROXIES: bad }), 'TRUSTED_PROXIES'), /addresses or networks/, bad);
  }
});

test('SMS_INBOUND_TOKEN: unset by default (the route answers 404); a URL-safe secret of 24+ characters, or a clear error', () => {
  assert.equal(loadConfig({}).sms.inboundToken, undefined);
  assert.equal(loadConfig({ SMS_INBOUND_TOKEN: '' }).sms.inboundToken, undefined);
  const token = 'a1B2c3D4e5F6g7H8i9J0k1L2_-';
  assert.equal(loadConfig({ SMS_INBOUND_TOKEN: token }).sms.inboundToken, token);
  for (const bad of ['short-secret', 'has a space in it 0123456789', 'slash/in/it/0123456789abcdefgh', 'x'.repeat(201)]) {
    assert.match(problemFor(configError({ SMS_INBOUND_TOKEN: bad }), 'SMS_INBOUND_TOKEN'), /24 to 200 letters/, bad);
  }
});

test('MPESA_CALLBACK_MAX_ATTEMPTS: 60 by default, its own (not INBOUND_MAX_ATTEMPTS); a whole number from 1 to 500, or a clear error', () => {
  assert.equal(loadConfig({}).mpesa.callbackMaxAttempts, 60);
  assert.equal(loadConfig({ INBOUND_MAX_ATTEMPTS: '2' }).mpesa.callbackMaxAttempts, 60);
  assert.equal(loadConfig({ MPESA_CALLBACK_MAX_ATTEMPTS: '500' }).mpesa.callbackMaxAttempts, 500);
  for (const bad of ['0', '501', '2.5', 'many']) {
    assert.match(problemFor(configError({ MPESA_CALLBACK_MAX_ATTEMPTS: bad }), 'MPESA_CALLBACK_MAX_ATTEMPTS'), /MPESA_CALLBACK_MAX_ATTEMPTS/);
  }
});

test('SMS_REPORT_TOKEN: unset by default (reports at the bare route); a URL-safe secret of 24+ characters, or a clear error', () => {
  assert.equal(loadConfig({}).sms.reportToken, undefined);
  assert.equal(loadConfig({ SMS_REPORT_TOKEN: '' }).sms.reportToken, undefined);
  const token = 'r1B2c3D4e5F6g7H8i9J0k1L2_-';
  assert.equal(loadConfig({ SMS_REPORT_TOKEN: token }).sms.reportToken, token);
  for (const bad of ['short-secret', 'has a space in it 0123456789', 'slash/in/it/0123456789abcdefgh']) {
    assert.match(problemFor(configError({ SMS_REPORT_TOKEN: bad }), 'SMS_REPORT_TOKEN'), /24 to 200 letters/, bad);
  }
});
