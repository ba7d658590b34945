/**
 * Builds the real app and its dependencies over a test database, with a logger whose
 * lines are captured (parsed JSON) so tests can assert on what would reach the logs.
 */
import { Writable } from 'node:stream';
import { createApp } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import type { ConversationHandler } from '../../src/conversation/port.js';
import { createDeps, type Deps } from '../../src/deps.js';
import type { JobDefinition } from '../../src/jobs/queue.js';
import { createLogger, type Logger } from '../../src/logger.js';
import type { TestDatabase } from './database.js';

/** Every variable production requires (dummy values), with `statsToken` as STATS_API_TOKEN. */
export function productionEnv(statsToken: string): Record<string, string> {
  return {
    APP_ENV: 'production',
    DATABASE_URL: 'postgres://invoiceiq@db.internal:5432/invoiceiq',
    WABA_TOKEN: 'waba-token',
    WABA_PHONE_ID: '109876543210987',
    WABA_VERIFY_TOKEN: 'verify-token',
    WABA_APP_SECRET: 'app-secret',
    SMS_API_KEY: 'sms-key',
    SMS_USERNAME: 'sms-user',
    SMS_REPORT_TOKEN: 'sms-report-token-0123456789abcdef',
    MPESA_CONSUMER_KEY: 'consumer-key',
    MPESA_CONSUMER_SECRET: 'consumer-secret',
    MPESA_SHORTCODE: '174379',
    MPESA_PASSKEY: 'passkey',
    MPESA_CALLBACK_URL: 'https://invoiceiq.example/payments/stk/callback',
    MPESA_ENVIRONMENT: 'sandbox',
    STATS_API_TOKEN: statsToken,
  };
}

export type LogLine = Record<string, unknown> & { level: string; message: string; timestamp: string };

export type LogCapture = { logger: Logger; lines: LogLine[]; text(): string };

export function captureLogs(level = 'debug'): LogCapture {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      raw.push(...chunk.toString('utf8').split('\n').filter((line) => line.length > 0));
      done();
    },
  });
  const logger = createLogger({ level, format: 'json' }, stream);
  return {
    logger,
    get lines() {
      return raw.map((line) => JSON.parse(line) as LogLine);
    },
    text: () => raw.join('\n'),
  };
}

/**
 * The configuration of a test app. Sends are not paced (WABA_MAX_SENDS_PER_SECOND 0) unless a
 * test asks: suites send bursts to the fake Graph API, and the pace has tests of its own
 * (test/pace.test.ts, test/outbox-pace.test.ts).
 */
export function testConfig(env: Record<string, string> = {}): Config {
  // As deployed, on Fly (Fly-Client-IP believed from a trusted proxy); FLY_APP_NAME: '' for off Fly.
  return loadConfig({ APP_ENV: 'development', LOG_LEVEL: 'debug', WABA_MAX_SENDS_PER_SECOND: '0', FLY_APP_NAME: 'invoiceiq-test', ...env });
}

export type TestApp = {
  deps: Deps;
  app: ReturnType<typeof createApp>;
  logs: LogCapture;
};

export function buildTestApp(
  database: TestDatabase,
  options: { env?: Record<string, string>; jobs?: JobDefinition[]; conversation?: ConversationHandler; now?: () => Date } = {},
): TestApp {
  const logs = captureLogs();
  const deps = createDeps({
    config: testConfig(options.env),
    logger: logs.logger,
    database: database.handle,
    ...(options.jobs === undefined ? {} : { extraJobs: options.jobs }),
    ...(options.conversation === undefined ? {} : { conversation: options.conversation }),
    ...(options.now === undefined ? {} : { now: options.now }),
    pollingIntervalSeconds: 0.5,
    supervise: false,
  });
  return { deps, app: createApp(deps), logs };
}
