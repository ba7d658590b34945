/**
 * `npm run migrate -- latest | up | down | status | to <name>`
 * Runs against DATABASE_URL, or the embedded database in DATA_DIR when it is unset.
 * Used by Fly's release_command in production.
 */
import { ConfigError, loadConfig } from '../config.js';
import { openDatabase } from '../db/connect.js';
import { runMigrateCommand } from '../db/migrate.js';

async function main(): Promise<void> {
  const config = loadConfig(process.env);
  // The release command waits for its locks as it always has (another release's migration
  // lock, a table in use): the service's lock timeout is for requests and jobs.
  const handle = await openDatabase(config.database.kind === 'postgres' ? { ...config.database, lockTimeoutMs: 0 } : config.database);
  try {
    await runMigrateCommand(handle.db, process.argv.slice(2), (line) => process.stdout.write(`${line}\n`));
  } finally {
    await handle.close();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof ConfigError || error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
