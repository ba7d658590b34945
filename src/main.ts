/**
 * Composition root: parse the config, start the service, stop it cleanly on SIGTERM/SIGINT.
 */
import { ConfigError, loadConfig } from './config.js';
import { DataDirLockedError } from './db/connect.js';
import { createLogger } from './logger.js';
import { startService } from './service.js';

/** Fly sends SIGKILL 10 s after SIGTERM by default (kill_timeout): finish before that. */
const HARD_EXIT_MS = 9_500;

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
  const logger = createLogger({ level: config.logLevel, format: config.logFormat });

  let service;
  try {
    service = await startService(config, logger);
  } catch (error) {
    if (error instanceof DataDirLockedError) {
      process.stderr.write(`${error.message}\n`);
    } else {
      logger.fatal({ error }, 'start-up failed');
    }
    process.exit(1);
  }

  const running = service;
  let signalled = false;
  const shutdown = (signal: NodeJS.Signals) => {
    if (signalled) return;
    signalled = true;
    logger.info({ signal }, 'shutting down');
    setTimeout(() => {
      logger.error('shutdown took too long; exiting');
      process.exit(1);
    }, HARD_EXIT_MS).unref();
    running.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ error }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

void main();
