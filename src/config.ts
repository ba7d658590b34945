/**
 * The service's configuration: one zod schema over the environment, parsed once in
 * main.ts, frozen and passed down. Nothing else reads process.env.
 *
 * In development every provider secret is optional so `npm start` works with no
 * accounts. With APP_ENV=production every secret must be present and well formed;
 * otherwise start-up stops with one message that names every problem.
 */
import { z } from 'zod';
import { PRIVATE_NETWORKS, parseNetwork } from './http/client-address.js';

/** Accepts true/false/1/0 (any case, surrounding spaces ignored). */
const booleanFromEnv = z
  .string()
  .trim()
  .toLowerCase()
  .pipe(z.enum(['true', 'false', '1', '0'], { error: 'must be one of true, false, 1, 0' }))
  .transform((value) => value === 'true' || value === '1');

/** An unset variable and an empty one mean the same: not configured. */
const optionalString = z
  .string()
  .trim()
  .transform((value) => (value === '' ? undefined : value))
  .optional();

const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' });

const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const EnvSchema = z.object({
  PORT: z.coerce.number({ error: 'must be a number' }).int().min(0).max(65535).default(8080),
  HOST: z.string().trim().min(1).default('0.0.0.0'),
  APP_ENV: z.enum(['development', 'production']).default('development'),
  LOG_LEVEL: z.enum(logLevels).default('info'),
  LOG_FORMAT: z.enum(['json', 'pretty']).default('json'),

  DATABASE_URL: optionalString.pipe(
    z.string().regex(/^postgres(ql)?:\/\//, 'must start with postgres:// or postgresql://').optional(),
  ),
  DATABASE_POOL_MAX: z.coerce.number({ error: 'must be a number' }).int().min(1).max(100).default(10),
  // Postgres ends a session left idle inside a transaction this long (0: never), releasing its locks.
  DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS: z.coerce.number({ error: 'must be a number' }).int().min(0).max(3_600_000).default(60_000),
  // Postgres cancels a statement of the service that waits this long for a lock (0: never).
  DATABASE_LOCK_TIMEOUT_MS: z.coerce.number({ error: 'must be a number' }).int().min(0).max(3_600_000).default(15_000),
  DATA_DIR: z.string().trim().min(1).default('./.data'),

  WABA_TOKEN: optionalString,
  WABA_PHONE_ID: optionalString.pipe(z.string().regex(/^\d+$/, 'must be digits').optional()),
  WABA_VERIFY_TOKEN: optionalString,
  WABA_APP_SECRET: optionalString,
  WABA_API_BASE_URL: httpUrl.default('https://graph.facebook.com'),
  WABA_API_VERSION: z.string().trim().regex(/^v\d+\.\d+$/, 'must look like v21.0').default('v21.0'),
  // At most 60 s each: the outbox's claim timeout (src/delivery/outbox.ts) counts on it.
  WABA_TIMEOUT_MS: z.coerce.number({ error: 'must be a number' }).int().min(100).max(60_000).default(5_000),
  // Meta's throughput per business number: 80 messages a second by default (1,000 on request). 0: no pacing.
  WABA_MAX_SENDS_PER_SECOND: z.coerce.number({ error: 'must be a number' }).int().min(0).max(10_000).default(80),
  WABA_TEMPLATE_INVOICE: optionalString,
  WABA_TEMPLATE_RECEIPT: optionalString,
  WABA_TEMPLATE_REMINDER: optionalString,
  WABA_TEMPLATE_LANGUAGE: z.string().trim().regex(/^[a-z]{2,3}(_[A-Z]{2})?$/, 'must be a language code like en or en_US').default('en'),

  SMS_API_KEY: optionalString,
  SMS_USERNAME: optionalString,
  SMS_SENDER_ID: optionalString,
  SMS_USE_SANDBOX: booleanFromEnv.default(false),
  SMS_TIMEOUT_MS: z.coerce.number({ error: 'must be a number' }).int().min(100).max(60_000).default(10_000),
  // The secret last part of the incoming-messages callback URL (POST /sms/inbound/<token>).
  SMS_INBOUND_TOKEN: optionalString.pipe(
    z.string().regex(/^[A-Za-z0-9_-]{24,200}$/, 'must be 24 to 200 letters, digits, _ or - (it goes in a URL)').optional(),
  ),
  // The secret last part of the delivery-reports callback URL (POST /sms/delivery-report/<token>);
  // unset (development only; required in production): reports are taken at the bare
  // /sms/delivery-report, which anyone can post to.
  SMS_REPORT_TOKEN: optionalString.pipe(
    z.string().regex(/^[A-Za-z0-9_-]{24,200}$/, 'must be 24 to 200 letters, digits, _ or - (it goes in a URL)').optional(),
  ),

  // The largest invoice a merchant may create (M-PESA takes at most 250,000 in one prompt), and
  // the days from sending to the due date.
  INVOICE_MAX_AMOUNT: z.coerce.number({ error: 'must be a number' }).int().min(1).max(250_000).default(250_000),
  INVOICE_DUE_DAYS: z.coerce.number({ error: 'must be a number' }).int().min(1).max(365).default(7),

  DELIVERY_MAX_ATTEMPTS: z.coerce.number({ error: 'must be a number' }).int().min(1).max(20).default(5),
  DELIVERY_SAFETY_NET_SECONDS: z.coerce.number({ error: 'must be a number' }).int().min(0).max(3600).default(15),
  INBOUND_MAX_ATTEMPTS: z.coerce.number({ error: 'must be a number' }).int().min(1).max(50).default(8),

  MPESA_CONSUMER_KEY: optionalString,
  MPESA_CONSUMER_SECRET: optionalString,
  MPESA_SHORTCODE: optionalString.pipe(z.string().regex(/^\d{5,7}$/, 'must be 5 to 7 digits').optional()),
  MPESA_PASSKEY: optionalString,
  MPESA_CALLBACK_URL: optionalString.pipe(httpUrl.optional()),
  // Unset: the sandbox (in development; production must set it, see ProductionRules).
  MPESA_ENVIRONMENT: z.enum(['sandbox', 'production']).optional(),
  MPESA_API_BASE_URL: optionalString.pipe(httpUrl.optional()),
  MPESA_TRANSACTION_TYPE: z.enum(['paybill', 'till']).default('paybill'),
  MPESA_PARTY_B: optionalString.pipe(z.string().regex(/^\d{5,7}$/, 'must be 5 to 7 digits').optional()),
  MPESA_TIMEOUT_MS: z.coerce.number({ error: 'must be a number' }).int().min(100).max(60_000).default(10_000),
  // Tries of an STK callback the database refused (kept for retry) before it is parked as dead.
  // Longer than other inbound events': only the callback carries the M-PESA receipt number. The
  // waits double from 1-2 s to 5-10 minutes, so 60 tries last about 4 to 9 hours.
  MPESA_CALLBACK_MAX_ATTEMPTS: z.coerce.number({ error: 'must be a number' }).int().min(1).max(500).default(60),
  MPESA_CALLBACK_ALLOWED_IPS: z
    .string()
    .trim()
    .default('')
    .transform((value) => value.split(',').map((ip) => ip.trim()).filter((ip) => ip.length > 0))
    .pipe(z.array(z.union([z.ipv4(), z.ipv6()], { error: 'must be a comma-separated list of IP addresses' }))),

  TRUSTED_PROXIES: z
    .string()
    .trim()
    .default('')
    .transform((value) => value.split(',').map((item) => item.trim()).filter((item) => item.length > 0))
    .refine((items) => items.every((item) => parseNetwork(item) !== undefined), { error: 'must be a comma-separated list of addresses or networks (address/prefix)' })
    .transform((networks) => (networks.length === 0 ? [...PRIVATE_NETWORKS] : networks)),

  // Set by Fly.io on every machine: its proxy then writes Fly-Client-IP itself, and only then is
  // that header believed (anywhere else a client could send it through a proxy that keeps it).
  FLY_APP_NAME: optionalString,
  STATS_API_TOKEN: optionalString,
  // Set: GET /metrics needs Authorization: Bearer <it> (a scraper off Fly's private network).
  METRICS_TOKEN: optionalString.pipe(z.string().min(24, 'must be at least 24 characters').optional()),
  PUBLIC_BASE_URL: optionalString.pipe(httpUrl.optional()),

  SIMULATOR: z.enum(['auto', 'off'], { error: 'must be auto or off' }).default('auto'),

  SHUTDOWN_TIMEOUT_MS: z.coerce.number({ error: 'must be a number' }).int().min(100).max(60_000).default(8_000),
});

/** Variables that must be set (non-empty) when APP_ENV=production. */
const requiredInProduction = [
  'DATABASE_URL',
  'WABA_TOKEN',
  'WABA_PHONE_ID',
  'WABA_VERIFY_TOKEN',
  'WABA_APP_SECRET',
  'SMS_API_KEY',
  'SMS_USERNAME',
  // Delivery reports are unsigned: in production only their secret URL takes them.
  'SMS_REPORT_TOKEN',
  'MPESA_CONSUMER_KEY',
  'MPESA_CONSUMER_SECRET',
  'MPESA_SHORTCODE',
  'MPESA_PASSKEY',
  'MPESA_CALLBACK_URL',
  'STATS_API_TOKEN',
] as const satisfies readonly (keyof z.infer<typeof EnvSchema>)[];

/** Any of these set means real provider accounts: the simulator stays off. */
const providerCredentials = [
  'WABA_TOKEN',
  'WABA_PHONE_ID',
  'WABA_APP_SECRET',
  'WABA_VERIFY_TOKEN',
  'SMS_API_KEY',
  'SMS_USERNAME',
  'MPESA_CONSUMER_KEY',
  'MPESA_CONSUMER_SECRET',
  'MPESA_PASSKEY',
  'MPESA_SHORTCODE',
] as const satisfies readonly (keyof z.infer<typeof EnvSchema>)[];

const ProductionRules = EnvSchema.superRefine((env, ctx) => {
  if (env.APP_ENV !== 'production') return;
  for (const name of requiredInProduction) {
    if (env[name] === undefined) {
      ctx.addIssue({ code: 'custom', path: [name], message: 'is required when APP_ENV=production' });
    }
  }
  if (env.MPESA_CALLBACK_URL !== undefined && !env.MPESA_CALLBACK_URL.startsWith('https://')) {
    ctx.addIssue({ code: 'custom', path: ['MPESA_CALLBACK_URL'], message: 'must be https in production' });
  }
  // The dashboard's sign-in links carry a single-use token: never over plain HTTP.
  if (env.PUBLIC_BASE_URL !== undefined && !env.PUBLIC_BASE_URL.startsWith('https://')) {
    ctx.addIssue({ code: 'custom', path: ['PUBLIC_BASE_URL'], message: 'must be https in production' });
  }
  if (env.STATS_API_TOKEN !== undefined && env.STATS_API_TOKEN.length < 32) {
    ctx.addIssue({ code: 'custom', path: ['STATS_API_TOKEN'], message: 'must be at least 32 characters in production' });
  }
  if (env.MPESA_TRANSACTION_TYPE === 'till' && env.MPESA_PARTY_B === undefined) {
    ctx.addIssue({ code: 'custom', path: ['MPESA_PARTY_B'], message: 'is required (the till number) when MPESA_TRANSACTION_TYPE=till' });
  }
  if (env.SMS_USE_SANDBOX) {
    ctx.addIssue({ code: 'custom', path: ['SMS_USE_SANDBOX'], message: 'must be false in production' });
  }
  // Its default is the sandbox, where no money moves: a production deployment says which it means.
  if (env.MPESA_ENVIRONMENT === undefined) {
    ctx.addIssue({ code: 'custom', path: ['MPESA_ENVIRONMENT'], message: 'is required when APP_ENV=production (production, or sandbox for a staging app)' });
  }
  // The access token and the consumer secret travel to these hosts: never over plain HTTP.
  for (const name of ['WABA_API_BASE_URL', 'MPESA_API_BASE_URL'] as const) {
    const url = env[name];
    if (url !== undefined && !url.startsWith('https://')) ctx.addIssue({ code: 'custom', path: [name], message: 'must be https in production' });
  }
});

type Env = z.infer<typeof EnvSchema>;

export type Config = Readonly<{
  port: number;
  host: string;
  appEnv: Env['APP_ENV'];
  logLevel: Env['LOG_LEVEL'];
  logFormat: Env['LOG_FORMAT'];
  shutdownTimeoutMs: number;
  database: Readonly<
    | { kind: 'postgres'; url: string; poolMax: number; idleInTransactionTimeoutMs: number; lockTimeoutMs: number }
    | { kind: 'embedded'; dataDir: string }
  >;
  whatsapp: Readonly<{
    token: string | undefined;
    phoneId: string | undefined;
    verifyToken: string | undefined;
    appSecret: string | undefined;
    apiBaseUrl: string;
    apiVersion: string;
    timeoutMs: number;
    /** WhatsApp sends this process starts in any one second at most (src/delivery/pace.ts); 0: no pacing. */
    maxSendsPerSecond: number;
    templates: Readonly<{ invoice: string | undefined; receipt: string | undefined; reminder: string | undefined }>;
    templateLanguage: string;
  }>;
  sms: Readonly<{
    apiKey: string | undefined;
    username: string | undefined;
    senderId: string | undefined;
    useSandbox: boolean;
    timeoutMs: number;
    /** The secret in the incoming-messages callback URL; unset: that route answers 404. */
    inboundToken: string | undefined;
    /** The secret in the delivery-reports callback URL; unset: the bare route takes reports. */
    reportToken: string | undefined;
  }>;
  invoices: Readonly<{ maxAmount: number; dueDays: number }>;
  delivery: Readonly<{ maxAttempts: number; inboundMaxAttempts: number; safetyNetSeconds: number }>;
  mpesa: Readonly<{
    consumerKey: string | undefined;
    consumerSecret: string | undefined;
    shortcode: string | undefined;
    passkey: string | undefined;
    callbackUrl: string | undefined;
    environment: 'sandbox' | 'production';
    apiBaseUrl: string;
    transactionType: 'CustomerPayBillOnline' | 'CustomerBuyGoodsOnline';
    partyB: string | undefined;
    timeoutMs: number;
    callbackAllowedIps: readonly string[];
    /** Tries of a kept callback before it is parked as dead. */
    callbackMaxAttempts: number;
  }>;
  /** Proxies whose Fly-Client-IP / X-Forwarded-For are believed (addresses or address/prefix networks). */
  trustedProxies: readonly string[];
  /** Running on Fly.io (FLY_APP_NAME set): Fly-Client-IP from a trusted proxy is believed. */
  onFly: boolean;
  stats: Readonly<{ apiToken: string | undefined; publicBaseUrl: string | undefined }>;
  /** GET /metrics: the bearer token it needs, if any (always refused through Fly's public edge). */
  metrics: Readonly<{ token: string | undefined }>;
  /**
   * Simulator mode (src/simulator): development with no WhatsApp, M-PESA or SMS credential
   * at all, unless SIMULATOR=off. Never in production.
   */
  simulator: boolean;
}>;

/** Thrown when the environment does not describe a runnable service; `problems` names each one. */
export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

const mpesaBaseUrls = {
  sandbox: 'https://sandbox.safaricom.co.ke',
  production: 'https://api.safaricom.co.ke',
} as const;

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/**
 * Parses an environment (normally process.env) into a frozen Config.
 * Never echoes a value back in an error: values may be secrets.
 */
export function loadConfig(env: Record<string, string | undefined>): Config {
  // An unset variable and an empty (or blank) one mean the same everywhere: PORT= must give
  // the default port, not port 0 (Number('') is 0).
  const present: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && value.trim() !== '') present[name] = value;
  }
  const parsed = ProductionRules.safeParse(present);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const name = issue.path.join('.') || '(environment)';
      // zod 4 does not keep the input on issues (and must not: it may be a secret), so
      // "missing" is decided by looking at the variable itself.
      const variable = issue.path[0];
      const missing = issue.code === 'invalid_type' && typeof variable === 'string' && present[variable] === undefined;
      return `${name} ${missing ? 'is required' : issue.message}`;
    });
    throw new ConfigError([...new Set(problems)].sort());
  }
  const e = parsed.data;
  return deepFreeze<Config>({
    port: e.PORT,
    host: e.HOST,
    appEnv: e.APP_ENV,
    logLevel: e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    database:
      e.DATABASE_URL === undefined
        ? { kind: 'embedded', dataDir: e.DATA_DIR }
        : {
            kind: 'postgres',
            url: e.DATABASE_URL,
            poolMax: e.DATABASE_POOL_MAX,
            idleInTransactionTimeoutMs: e.DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS,
            lockTimeoutMs: e.DATABASE_LOCK_TIMEOUT_MS,
          },
    whatsapp: {
      token: e.WABA_TOKEN,
      phoneId: e.WABA_PHONE_ID,
      verifyToken: e.WABA_VERIFY_TOKEN,
      appSecret: e.WABA_APP_SECRET,
      apiBaseUrl: e.WABA_API_BASE_URL.replace(/\/+$/, ''),
      apiVersion: e.WABA_API_VERSION,
      timeoutMs: e.WABA_TIMEOUT_MS,
      maxSendsPerSecond: e.WABA_MAX_SENDS_PER_SECOND,
      templates: { invoice: e.WABA_TEMPLATE_INVOICE, receipt: e.WABA_TEMPLATE_RECEIPT, reminder: e.WABA_TEMPLATE_REMINDER },
      templateLanguage: e.WABA_TEMPLATE_LANGUAGE,
    },
    sms: {
      apiKey: e.SMS_API_KEY,
      username: e.SMS_USERNAME,
      senderId: e.SMS_SENDER_ID,
      useSandbox: e.SMS_USE_SANDBOX,
      timeoutMs: e.SMS_TIMEOUT_MS,
      inboundToken: e.SMS_INBOUND_TOKEN,
      reportToken: e.SMS_REPORT_TOKEN,
    },
    invoices: { maxAmount: e.INVOICE_MAX_AMOUNT, dueDays: e.INVOICE_DUE_DAYS },
    delivery: {
      maxAttempts: e.DELIVERY_MAX_ATTEMPTS,
      inboundMaxAttempts: e.INBOUND_MAX_ATTEMPTS,
      safetyNetSeconds: e.DELIVERY_SAFETY_NET_SECONDS,
    },
    mpesa: {
      consumerKey: e.MPESA_CONSUMER_KEY,
      consumerSecret: e.MPESA_CONSUMER_SECRET,
      shortcode: e.MPESA_SHORTCODE,
      passkey: e.MPESA_PASSKEY,
      callbackUrl: e.MPESA_CALLBACK_URL,
      environment: e.MPESA_ENVIRONMENT ?? 'sandbox',
      apiBaseUrl: (e.MPESA_API_BASE_URL ?? mpesaBaseUrls[e.MPESA_ENVIRONMENT ?? 'sandbox']).replace(/\/+$/, ''),
      transactionType: e.MPESA_TRANSACTION_TYPE === 'till' ? 'CustomerBuyGoodsOnline' : 'CustomerPayBillOnline',
      partyB: e.MPESA_PARTY_B,
      timeoutMs: e.MPESA_TIMEOUT_MS,
      callbackAllowedIps: e.MPESA_CALLBACK_ALLOWED_IPS,
      callbackMaxAttempts: e.MPESA_CALLBACK_MAX_ATTEMPTS,
    },
    trustedProxies: e.TRUSTED_PROXIES,
    onFly: e.FLY_APP_NAME !== undefined,
    stats: { apiToken: e.STATS_API_TOKEN, publicBaseUrl: e.PUBLIC_BASE_URL?.replace(/\/+$/, '') },
    metrics: { token: e.METRICS_TOKEN },
    simulator: e.APP_ENV === 'development' && e.SIMULATOR === 'auto' && providerCredentials.every((name) => e[name] === undefined),
  });
}
