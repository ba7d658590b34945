/**
 * The typed dependency bag (no DI container): `createDeps` builds every collaborator from
 * the config and an open database; main.ts and the tests both use it.
 */
import type { Transaction } from 'kysely';
import type { Config } from './config.js';
import type { Database } from './db/schema.js';
import { createConversationHandler } from './conversation/handler.js';
import type { ConversationHandler } from './conversation/port.js';
import type { DatabaseHandle } from './db/connect.js';
import { createOutbox, type Outbox } from './delivery/outbox.js';
import { statsFoldJob } from './stats/summary.js';
import { createWhatsAppInbound, type WhatsAppInbound } from './inbound/whatsapp.js';
import { heartbeatJob } from './jobs/heartbeat.js';
import { createJobQueue, type JobDefinition, type JobQueue } from './jobs/queue.js';
import type { Logger } from './logger.js';
import { createMetrics, type Metrics } from './metrics.js';
import { createAuth, createFailureLimiter, type Auth } from './http/auth.js';
import { createPayments, type Payments } from './payments/service.js';
import { createDarajaClient, type DarajaClient } from './providers/mpesa/client.js';
import { createSmsClient, type SmsClient } from './providers/sms/client.js';
import { createWhatsAppClient, type WhatsAppClient } from './providers/whatsapp/client.js';
import type { Simulator } from './simulator/index.js';

export type Deps = {
  readonly config: Config;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly database: DatabaseHandle;
  readonly jobs: JobQueue;
  readonly whatsapp: WhatsAppClient;
  readonly sms: SmsClient;
  readonly outbox: Outbox;
  readonly inbound: WhatsAppInbound;
  readonly daraja: DarajaClient;
  readonly payments: Payments;
  readonly auth: Auth;
  /** The clock of everything that reads time through deps (tests move it). */
  readonly now: () => Date;
  /** Every job kind the workers run. */
  readonly jobDefinitions: readonly JobDefinition[];
  /** Simulator mode only: the sandbox standing in for the providers. */
  readonly simulator: Simulator | undefined;
};

export type DepsOptions = {
  config: Config;
  logger: Logger;
  database: DatabaseHandle;
  metrics?: Metrics;
  conversation?: ConversationHandler;
  /** Extra job kinds (tests). */
  extraJobs?: readonly JobDefinition[];
  pollingIntervalSeconds?: number;
  supervise?: boolean;
  /** The clock of the conversation and payments (tests move it). */
  now?: () => Date;
  /** Simulator mode: the sandbox, whose inbox replaces Africa's Talking. */
  simulator?: Simulator;
};

export function createDeps(options: DepsOptions): Deps {
  const { config, logger, database } = options;
  const metrics = options.metrics ?? createMetrics();
  const jobs = createJobQueue({
    pool: database.pool,
    logger,
    metrics,
    ...(options.pollingIntervalSeconds === undefined ? {} : { pollingIntervalSeconds: options.pollingIntervalSeconds }),
    ...(options.supervise === undefined ? {} : { supervise: options.supervise }),
  });
  const whatsapp = createWhatsAppClient({
    baseUrl: config.whatsapp.apiBaseUrl,
    apiVersion: config.whatsapp.apiVersion,
    phoneId: config.whatsapp.phoneId,
    token: config.whatsapp.token,
    timeoutMs: config.whatsapp.timeoutMs,
  });
  const sms = options.simulator?.sandbox.sms ?? createSmsClient({
    apiKey: config.sms.apiKey,
    username: config.sms.username,
    senderId: config.sms.senderId,
    useSandbox: config.sms.useSandbox,
    timeoutMs: config.sms.timeoutMs,
  });
  const outbox = createOutbox({ db: database.db, jobs, whatsapp, sms, config, metrics, logger });
  const daraja = createDarajaClient({
    baseUrl: config.mpesa.apiBaseUrl,
    consumerKey: config.mpesa.consumerKey,
    consumerSecret: config.mpesa.consumerSecret,
    shortcode: config.mpesa.shortcode,
    passkey: config.mpesa.passkey,
    transactionType: config.mpesa.transactionType,
    partyB: config.mpesa.partyB,
    timeoutMs: config.mpesa.timeoutMs,
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  const payments = createPayments({ db: database.db, jobs, outbox, daraja, config, metrics, logger, ...(options.now === undefined ? {} : { now: options.now }) });
  const auth = createAuth({
    db: database.db,
    statsToken: config.stats.apiToken,
    secureCookies: config.appEnv === 'production',
    limiter: createFailureLimiter(),
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  const publicBaseUrl = config.stats.publicBaseUrl;
  const dashboardLink =
    publicBaseUrl === undefined
      ? undefined
      : async (trx: Transaction<Database>, merchantId: string) => `${publicBaseUrl}/dashboard/login?link=${await auth.createLink(trx, merchantId)}`;
  const inbound = createWhatsAppInbound({
    db: database.db,
    jobs,
    outbox,
    conversation: options.conversation ?? createConversationHandler({
        payments,
        maxAmount: config.invoices.maxAmount,
        dueDays: config.invoices.dueDays,
        ...(dashboardLink === undefined ? {} : { dashboardLink }),
        ...(options.now === undefined ? {} : { now: options.now }),
      }),
    metrics,
    logger,
    maxAttempts: config.delivery.inboundMaxAttempts,
    phoneId: config.whatsapp.phoneId,
    retryJobs: { mpesa_callback: payments.callbackRetryJob },
  });
  return {
    config,
    logger,
    auth,
    now: options.now ?? (() => new Date()),
    metrics,
    database,
    jobs,
    whatsapp,
    sms,
    outbox,
    inbound,
    daraja,
    payments,
    simulator: options.simulator,
    jobDefinitions: [heartbeatJob, outbox.job, outbox.writeJob, outbox.sweepJob, inbound.retryJob, inbound.retrySweepJob, ...payments.jobs, statsFoldJob(database.db), ...(options.extraJobs ?? [])],
  };
}
