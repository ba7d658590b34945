/**
 * Kysely's Migrator over the `migrations/` folder. The folder is found relative to this
 * module, so it works from the sources (tsx: migrations/*.ts) and from the build
 * (dist/src/db -> dist/migrations/*.js).
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileMigrationProvider, Migrator, NO_MIGRATIONS, sql, type Kysely, type MigrationResultSet } from 'kysely';

export const migrationsFolder = fileURLToPath(new URL('../../migrations', import.meta.url));

export function createMigrator<DB>(db: Kysely<DB>): Migrator {
  return new Migrator({
    db,
    provider: new FileMigrationProvider({ fs, path, migrationFolder: migrationsFolder }),
  });
}

/** Raised when a migration run reports an error; names the migration that failed. */
export class MigrationError extends Error {
  constructor(result: MigrationResultSet) {
    const failed = result.results?.find((r) => r.status === 'Error');
    const cause = result.error instanceof Error ? result.error.message : String(result.error);
    super(`Migration ${failed?.migrationName ?? '(setup)'} failed: ${cause}`);
    this.name = 'MigrationError';
  }
}

/** Runs a migrator operation and throws MigrationError when it reports one. */
export function check(result: MigrationResultSet): MigrationResultSet {
  if (result.error !== undefined) throw new MigrationError(result);
  return result;
}

export async function migrateToLatest<DB>(db: Kysely<DB>): Promise<MigrationResultSet> {
  return check(await createMigrator(db).migrateToLatest());
}

/**
 * Names of migrations in the folder that the database has not applied. One query, no
 * locks and no DDL: cheap enough to run at every start before deciding to migrate.
 */
export async function pendingMigrations<DB>(db: Kysely<DB>): Promise<string[]> {
  const files = (await fs.readdir(migrationsFolder))
    .filter((name) => /\.(js|ts|mjs|mts)$/.test(name) && !name.endsWith('.d.ts'))
    .map((name) => name.replace(/\.(js|ts|mjs|mts)$/, ''));
  let applied: Set<string>;
  try {
    const result = await sql<{ name: string }>`select name from kysely_migration`.execute(db);
    applied = new Set(result.rows.map((row) => row.name));
  } catch {
    return files.sort(); // No migration table yet: everything is pending.
  }
  return files.filter((name) => !applied.has(name)).sort();
}

const usage = 'usage: npm run migrate -- latest | up | down | status | to <name|0>';

/** The migrate CLI's verbs; `print` receives one line per migration touched. */
export async function runMigrateCommand<DB>(db: Kysely<DB>, args: readonly string[], print: (line: string) => void): Promise<void> {
  const migrator = createMigrator(db);
  const [command, target] = args;
  const report = (result: MigrationResultSet) => {
    const results = check(result).results ?? [];
    if (results.length === 0) print('nothing to do');
    for (const r of results) print(`${r.direction === 'Up' ? 'applied' : 'reverted'} ${r.migrationName}`);
  };
  switch (command) {
    case 'latest':
      return report(await migrator.migrateToLatest());
    case 'up':
      return report(await migrator.migrateUp());
    case 'down':
      return report(await migrator.migrateDown());
    case 'to':
      if (target === undefined || target === '') throw new Error(`'to' needs a migration name (or 0 for none). ${usage}`);
      return report(await migrator.migrateTo(target === '0' ? NO_MIGRATIONS : target));
    case 'status': {
      const migrations = await migrator.getMigrations();
      if (migrations.length === 0) print('no migrations found');
      for (const m of migrations) {
        print(m.executedAt === undefined ? `pending  ${m.name}` : `applied  ${m.name}  (${m.executedAt.toISOString()})`);
      }
      return;
    }
    default:
      throw new Error(usage);
  }
}

