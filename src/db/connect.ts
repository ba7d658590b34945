/**
 * Opens the database: a pg Pool on DATABASE_URL, or the embedded PGlite in DATA_DIR.
 *
 * Both paths go through `pg` and Kysely's ordinary PostgresDialect, so the embedded
 * database behaves like production (int8 as strings, the same error objects, the same
 * transaction semantics). PGlite is single-session: its pool has exactly one connection
 * and every consumer (Kysely, pg-boss, migrations) must share that pool.
 */
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { PGlite } from '@electric-sql/pglite';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { Database } from './schema.js';

export type DatabaseKind = 'postgres' | 'embedded';

export type DatabaseHandle = {
  readonly kind: DatabaseKind;
  readonly db: Kysely<Database>;
  readonly pool: pg.Pool;
  /** True when `select 1` answers within `timeoutMs`. Never throws. */
  ping(timeoutMs: number): Promise<boolean>;
  /** Closes Kysely, the pool and (embedded) PGlite and its lock. Idempotent. */
  close(): Promise<void>;
};

export type DatabaseSettings =
  | {
      kind: 'postgres';
      url: string;
      poolMax: number;
      connectTimeoutMs?: number;
      /**
       * Set on every connection: Postgres ends a session left idle inside a transaction this
       * long (unset or 0: never). A machine that stops mid-transaction (paused, cut off from the
       * network, stuck on an await) would otherwise hold its row locks (an invoice, a payment
       * attempt) until TCP gives up, minutes later, and every other machine's callbacks and
       * sends for those rows wait. Set by a statement on connect, not a startup option: a
       * session-mode PgBouncer refuses startup options it does not know.
       */
      idleInTransactionTimeoutMs?: number;
      /**
       * Set on every connection the same way: Postgres cancels a statement that has waited this
       * long for a lock (unset or 0: never), a row's, a table's or an advisory one (SQLSTATE
       * 55P03, a failure like any other database error to its caller, whose retry job or
       * reconciliation tries again). Without a bound, statements queued behind a lock another
       * machine holds keep their connections for as long as it holds it, and a pool of ten
       * waiting stops this machine. Only waits: a long scan (pg-boss's archive of a large
       * backlog, the stats fold) is not cut short, since cut short it would fail the same way
       * at every run. `npm run migrate` opens without it.
       */
      lockTimeoutMs?: number;
    }
  | { kind: 'embedded'; dataDir: string }
  /** An already-open PGlite (tests): the handle closes it on close(). */
  | { kind: 'pglite-instance'; pglite: PGlite };

/** Raised when the embedded data directory is held by another live process. */
export class DataDirLockedError extends Error {
  constructor(dataDir: string, pid: number) {
    super(
      `The embedded database in ${dataDir} is already in use by process ${pid}. ` +
        'Stop that process, or set DATA_DIR to another directory (or DATABASE_URL to use Postgres).',
    );
    this.name = 'DataDirLockedError';
  }
}

function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Lock files this process holds now (absolute paths). */
const locksHeldHere = new Set<string>();

/**
 * Takes an exclusive lock file in the data directory. A lock left by a process that is no
 * longer running is taken over; a live holder makes this throw DataDirLockedError.
 * Returns the release function.
 */
export function lockDataDir(dataDir: string): () => void {
  const lockPath = join(resolve(dataDir), 'invoiceiq.lock');
  // A lock file naming this very process is taken over below (a container restarted as the
  // same pid, often 1, left it), so a lock this process holds right now is tracked here:
  // a second open in the same process must fail too, not run two PGlites on one directory.
  if (locksHeldHere.has(lockPath)) throw new DataDirLockedError(dataDir, process.pid);
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      const fd = openSync(lockPath, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      locksHeldHere.add(lockPath);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        locksHeldHere.delete(lockPath);
        rmSync(lockPath, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      let holder: number;
      try {
        holder = Number.parseInt(readFileSync(lockPath, 'utf8').trim(), 10);
      } catch {
        continue; // Released between our open and read: try again.
      }
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && processIsAlive(holder)) {
        throw new DataDirLockedError(dataDir, holder);
      }
      // Stale lock from a crashed process (or unreadable). Rename is atomic: when two
      // processes race to take it over, exactly one rename succeeds; the other finds the
      // winner's fresh lock on its next attempt.
      const aside = `${lockPath}.stale.${process.pid}`;
      try {
        renameSync(lockPath, aside);
        rmSync(aside, { force: true });
      } catch {
        /* another process took it over first */
      }
    }
  }
  throw new Error(`Could not take the lock on ${lockPath}`);
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function buildHandle(kind: DatabaseKind, pool: pg.Pool, onClose: () => Promise<void>): DatabaseHandle {
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  let closing: Promise<void> | undefined;
  let probe: Promise<boolean> | undefined;
  return {
    kind,
    db,
    pool,
    async ping(timeoutMs) {
      // One probe query at a time: while the database hangs, repeated readiness checks
      // wait on the same probe instead of piling queries up on the pool.
      probe ??= sql`select 1`
        .execute(db)
        .then(() => true, () => false)
        .finally(() => {
          probe = undefined;
        });
      try {
        return await withTimeout(probe, timeoutMs);
      } catch {
        return false;
      }
    },
    close() {
      closing ??= (async () => {
        // Kysely's destroy ends the pool.
        await db.destroy().catch(() => undefined);
        await onClose();
      })();
      return closing;
    },
  };
}

/** PGlite's pg adapter: imported only when the embedded database is used (it is large). */
async function pglitePool(pglite: PGlite): Promise<pg.Pool> {
  const { createPgConfig } = await import('@electric-sql/pglite/node-postgres');
  // One connection, never closed for idleness: the PGlite session is the database.
  const pool = new pg.Pool({ ...createPgConfig(pglite), max: 1, idleTimeoutMillis: 0 });
  pool.on('error', () => undefined);
  // pg-pool's own query() ends the client a query failed on; here every client is PGlite's
  // one session, so one failed statement (pg-boss's, a summary's) would end the database for
  // the whole process. Its client is given back instead, as Kysely does.
  const query = async (...args: unknown[]): Promise<unknown> => {
    if (typeof args.at(-1) === 'function') throw new TypeError('pool.query: callbacks are not supported on the embedded database');
    const client = await pool.connect();
    try {
      return await (client.query as (...a: unknown[]) => Promise<unknown>)(...args);
    } finally {
      client.release();
    }
  };
  pool.query = query as typeof pool.query;
  return pool;
}

export async function openDatabase(settings: DatabaseSettings): Promise<DatabaseHandle> {
  switch (settings.kind) {
    case 'postgres': {
      const pool = new pg.Pool({
        connectionString: settings.url,
        max: settings.poolMax,
        connectionTimeoutMillis: settings.connectTimeoutMs ?? 5_000,
        idleTimeoutMillis: 30_000,
        application_name: 'invoiceiq',
      });
      // An idle client losing its server must not crash the process; the next query reconnects.
      pool.on('error', () => undefined);
      const timeouts: Array<[string, number]> = [
        ['idle_in_transaction_session_timeout', settings.idleInTransactionTimeoutMs ?? 0],
        ['lock_timeout', settings.lockTimeoutMs ?? 0],
      ];
      const sessionSettings = timeouts.filter(([, ms]) => ms > 0).map(([name, ms]) => `set ${name} = ${Math.floor(ms)}`);
      if (sessionSettings.length > 0) {
        // Queued on the new client before anything it is given for (pg runs a client's queries in order).
        pool.on('connect', (client) => {
          client.query(sessionSettings.join('; ')).catch(() => undefined);
        });
      }
      return buildHandle('postgres', pool, async () => undefined);
    }
    case 'embedded': {
      const dataDir = resolve(settings.dataDir);
      mkdirSync(dataDir, { recursive: true });
      const release = lockDataDir(dataDir);
      try {
        const { PGlite } = await import('@electric-sql/pglite');
        const pglite = await PGlite.create(join(dataDir, 'pglite'));
        return buildHandle('embedded', await pglitePool(pglite), async () => {
          await pglite.close().catch(() => undefined);
          release();
        });
      } catch (error) {
        release();
        throw error;
      }
    }
    case 'pglite-instance': {
      const { pglite } = settings;
      return buildHandle('embedded', await pglitePool(pglite), async () => {
        if (!pglite.closed) await pglite.close().catch(() => undefined);
      });
    }
  }
}
