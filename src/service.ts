/**
 * Starts and stops the whole service: database (migrated when embedded or in development),
 * job workers, HTTP server. main.ts calls it; tests call it to exercise the real lifecycle.
 */
import type { Server as HttpServer, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ServerType } from '@hono/node-server';
import type { Config } from './config.js';
import { openDatabase } from './db/connect.js';
import { migrateToLatest, pendingMigrations } from './db/migrate.js';
import type { Deps } from './deps.js';
import type { Logger } from './logger.js';
import type { SimulatorOptions } from './simulator/index.js';

/** How long the embedded database leaves its first moments to the HTTP server. */
const EMBEDDED_JOBS_DELAY_MS = 500;

export type RunningService = {
  readonly deps: Deps;
  readonly port: number;
  /** Stops accepting requests, finishes in-flight ones, stops workers, closes the database. */
  stop(): Promise<void>;
};

function listen(server: ServerType): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.once('listening', () => resolve((server.address() as AddressInfo).port));
  });
}

/**
 * Returns the function that starts draining `server`: idle keep-alive connections are closed
 * at once, and every in-flight response closes its connection when it is done (it is sent
 * with `Connection: close`). Without this, server.close() waits for clients to let go of
 * their keep-alive connections, which a proxy may never do before the shutdown deadline.
 */
function drainOnStop(server: HttpServer): () => void {
  const inFlight = new Set<ServerResponse>();
  let draining = false;
  server.on('request', (_request, response: ServerResponse) => {
    if (draining) response.shouldKeepAlive = false;
    inFlight.add(response);
    response.once('close', () => inFlight.delete(response));
    response.once('finish', () => {
      inFlight.delete(response);
      if (draining) server.closeIdleConnections();
    });
  });
  return () => {
    draining = true;
    for (const response of inFlight) {
      if (!response.headersSent) response.shouldKeepAlive = false;
    }
    server.closeIdleConnections();
  };
}

export type ServiceOptions = {
  /** Simulator mode: prompt timeout and status delays (tests shorten them). */
  simulator?: SimulatorOptions;
};

export async function startService(givenConfig: Config, logger: Logger, options: ServiceOptions = {}): Promise<RunningService> {
  // The database opens (PGlite compiles its WebAssembly off the main thread) while the rest
  // of the app's modules load and, in simulator mode, the sandbox starts: a shorter cold start.
  const settled = await Promise.allSettled([
    openDatabase(givenConfig.database),
    givenConfig.simulator ? import('./simulator/index.js').then((m) => m.startSimulator(givenConfig, logger, options.simulator)) : Promise.resolve(undefined),
    import('./deps.js'),
    import('./app.js'),
    import('@hono/node-server'),
    import('./jobs/heartbeat.js'),
  ]);
  const [openedDatabase, startedSimulator, deps_, app_, server_, heartbeat_] = settled;
  if (
    openedDatabase.status === 'rejected' ||
    startedSimulator.status === 'rejected' ||
    deps_.status === 'rejected' ||
    app_.status === 'rejected' ||
    server_.status === 'rejected' ||
    heartbeat_.status === 'rejected'
  ) {
    if (openedDatabase.status === 'fulfilled') await openedDatabase.value.close();
    if (startedSimulator.status === 'fulfilled') await startedSimulator.value?.simulator.close();
    throw settled.find((result): result is PromiseRejectedResult => result.status === 'rejected')?.reason;
  }
  const database = openedDatabase.value;
  // Simulator mode: the bot runs on the config that points at the sandbox.
  const simulated = startedSimulator.value;
  const config = simulated?.config ?? givenConfig;
  const { createDeps } = deps_.value;
  const { createApp } = app_.value;
  const { serve } = server_.value;
  const { heartbeatJob } = heartbeat_.value;
  try {
    // Production migrates in Fly's release command, once, before machines start.
    if ((database.kind === 'embedded' || config.appEnv === 'development') && (await pendingMigrations(database.db)).length > 0) {
      const result = await migrateToLatest(database.db);
      for (const r of result.results ?? []) logger.info({ migration: r.migrationName }, 'migration applied');
    }
    const deps = createDeps({ config, logger, database, ...(simulated === undefined ? {} : { simulator: simulated.simulator }) });
    const { jobs } = deps;
    const app = createApp(deps);
    const server = serve({ fetch: app.fetch, port: config.port, hostname: config.host });
    const drain = drainOnStop(server as HttpServer);
    const port = await listen(server);
    // Listening first, then the queues: readiness (the database) is reached sooner, and the
    // webhook waits on jobs.ready for the moment in between. The embedded database runs on
    // this thread, so there the queues start a moment later, after the first health checks.
    const startJobs = async () => {
      await jobs.start(deps.jobDefinitions);
      await jobs.boss.schedule(heartbeatJob.name, '*/5 * * * *', { source: 'schedule' }, { tz: 'Africa/Nairobi' });
      // pg-boss runs each cron once across all instances.
      await jobs.boss.schedule('payments-reconcile', '* * * * *', {}, { tz: 'Africa/Nairobi' });
      await jobs.boss.schedule('invoice-reminders', '0 9 * * *', {}, { tz: 'Africa/Nairobi' });
      await jobs.boss.schedule('stats-fold', '* * * * *', {}, { tz: 'Africa/Nairobi' });
      await jobs.boss.schedule('outbox-sweep', '*/5 * * * *', {}, { tz: 'Africa/Nairobi' });
      await jobs.boss.schedule('inbound-retry-sweep', '*/5 * * * *', {}, { tz: 'Africa/Nairobi' });
    };
    let jobsStarted: Promise<void>;
    if (database.kind === 'embedded') {
      jobsStarted = new Promise<void>((resolve) => setTimeout(resolve, EMBEDDED_JOBS_DELAY_MS)).then(startJobs);
      jobsStarted.catch((error: unknown) => {
        logger.fatal({ error }, 'job queue failed to start');
        process.exitCode = 1;
      });
    } else {
      jobsStarted = startJobs();
      try {
        await jobsStarted;
      } catch (error) {
        await new Promise<void>((resolve) => server.close(() => resolve()));
        throw error;
      }
    }
    logger.info({ port, database: database.kind }, `InvoiceIQ listening on http://localhost:${port}`);
    if (config.sms.apiKey !== undefined && config.sms.inboundToken === undefined) {
      // Texts sent by SMS say "reply PAY": without the incoming-messages route those replies are lost.
      logger.warn('SMS_INBOUND_TOKEN is not set: replies to the SMS number (a customer\'s PAY) are not received; set it and point Africa\'s Talking\'s incoming messages at /sms/inbound/<token>');
    }
    if (config.sms.apiKey !== undefined && config.sms.reportToken === undefined) {
      // Reports are unsigned: at the bare URL anyone can post them (they can move only our own SMS, but are stored).
      logger.warn('SMS_REPORT_TOKEN is not set: SMS delivery reports are taken at the bare /sms/delivery-report, which anyone can post to; set it and point Africa\'s Talking\'s delivery reports at /sms/delivery-report/<token>');
    }
    if (simulated !== undefined) {
      const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
      const origin = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
      simulated.simulator.sandbox.setAppUrl(origin);
      const shown = host === '127.0.0.1' ? `http://localhost:${port}` : origin;
      logger.info({ simulator: true }, `Simulator mode (no WhatsApp, M-PESA or SMS accounts configured): open ${shown}/simulator`);
    }

    let stopping: Promise<void> | undefined;
    const stop = () =>
      (stopping ??= (async () => {
        // No more status webhooks or prompt time-outs from the sandbox; it keeps answering the
        // deliveries still in flight until the end.
        simulated?.simulator.sandbox.pause();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        // In-flight requests get until the deadline; then their sockets are cut.
        const deadline = setTimeout(() => (server as { closeAllConnections?: () => void }).closeAllConnections?.(), config.shutdownTimeoutMs / 2);
        drain();
        await closed;
        clearTimeout(deadline);
        // No send starts any more (the workers' included: a send cut off by the kill timeout
        // may go twice; theirs are put back for their jobs); then the workers, then the
        // deliveries in flight.
        deps.outbox.beginStop();
        deps.payments.beginStop();
        await jobsStarted.catch(() => undefined);
        await jobs.stop(config.shutdownTimeoutMs / 2);
        await deps.outbox.stop();
        await simulated?.simulator.close();
        await database.close();
        logger.info('InvoiceIQ stopped');
      })());
    return { deps, port, stop };
  } catch (error) {
    await simulated?.simulator.close();
    await database.close();
    throw error;
  }
}
