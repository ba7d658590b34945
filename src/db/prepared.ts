/**
 * Named prepared statements for Kysely's statements on Postgres.
 *
 * `pg` sends a statement without a name as Parse + Bind + Execute every time: Postgres parses,
 * analyses and plans it on each call. Given a name, `pg` parses it once per connection and then
 * only binds and executes it, and Postgres may keep a generic plan. Kysely passes its SQL text
 * and parameters only, so the pool it is given (`preparingPool`) names each statement text
 * that runs a second time (a statement seen once, an ad hoc query, stays unnamed) after its
 * text: the same text always gets the same name, and a name is never reused for another text.
 *
 * Bounds and faults:
 * - At most `maxNames` texts are named per pool (each costs a little memory in every server
 *   connection that runs it); later new texts run unnamed.
 * - Only SELECT, INSERT, UPDATE, DELETE and WITH statements are named (not BEGIN, COMMIT, SET).
 * - A table changed under a prepared `select *` (a migration run by another machine while this
 *   one is still serving) makes Postgres refuse it: "cached plan must not change result type"
 *   (0A000). The names are then all given up (a new generation) so every statement is prepared
 *   again as it is now; the statement that met the error is run again at once when no
 *   transaction is open on its connection, otherwise the error stands (the transaction is
 *   aborted anyway) and the caller's retry prepares afresh. A statement the server no longer
 *   knows (26000) is treated the same way.
 * - A transaction-mode PgBouncer does not keep prepared statements: such a deployment sets
 *   DATABASE_PREPARED_STATEMENTS=false (README).
 */
import type { PostgresPool, PostgresPoolClient } from 'kysely';
import type pg from 'pg';

/** The most statement texts one pool names (the service's own statements are far fewer). */
export const MAX_PREPARED_NAMES = 256;

/** How many times a text must be seen before it is named (once: an ad hoc query stays unnamed). */
const NAME_AFTER = 2;

const NAMEABLE = /^\s*(select|insert|update|delete|with)\b/i;
const OPENS = /^\s*(begin|start\s+transaction)\b/i;
const CLOSES = /^\s*(commit|rollback|end|abort)\b/i;

export type StatementNames = {
  /** The name for `text`, or undefined to run it unnamed. */
  nameOf(text: string): string | undefined;
  /** Forgets every name: the next statements are prepared again under new names. */
  renew(): void;
  /** How many texts are named now (for tests and metrics). */
  readonly size: number;
  /** Goes up by one at each renew. */
  readonly generation: number;
};

export function statementNames(maxNames = MAX_PREPARED_NAMES): StatementNames {
  let generation = 0;
  let names = new Map<string, string>();
  /** Texts seen fewer than NAME_AFTER times (bounded like the names). */
  let seen = new Map<string, number>();
  return {
    nameOf(text) {
      const known = names.get(text);
      if (known !== undefined) return known;
      if (names.size >= maxNames || !NAMEABLE.test(text)) return undefined;
      const count = (seen.get(text) ?? 0) + 1;
      if (count < NAME_AFTER) {
        if (seen.size >= maxNames * 4) seen.clear();
        seen.set(text, count);
        return undefined;
      }
      seen.delete(text);
      const name = `iq_${generation}_${names.size}`;
      names.set(text, name);
      return name;
    },
    renew() {
      generation += 1;
      names = new Map();
      seen = new Map();
    },
    get size() {
      return names.size;
    },
    get generation() {
      return generation;
    },
  };
}

/** Whether `error` says a prepared statement no longer fits the server's tables, or is gone. */
function isStalePreparedStatement(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (code === '26000') return true;
  return code === '0A000' && typeof message === 'string' && message.includes('cached plan must not change result type');
}

type Queryable = { query(config: pg.QueryConfig): Promise<pg.QueryResult> };

/**
 * A pool for Kysely's PostgresDialect over `pool`, naming repeated statements (see above).
 * Anything other than a text with parameters (a cursor, say) passes through unchanged.
 */
export function preparingPool(pool: pg.Pool, names: StatementNames = statementNames()): PostgresPool {
  /** The generation of names each connection has prepared statements of. */
  const preparedFor = new WeakMap<pg.PoolClient, number>();
  return {
    async connect(): Promise<PostgresPoolClient> {
      const client = await pool.connect();
      // Statements of names given up (renew) are dropped from the connection the next time it
      // is taken, outside any transaction: they are never run again.
      const had = preparedFor.get(client);
      if (had !== undefined && had !== names.generation) {
        try {
          await client.query('deallocate all');
        } catch (error) {
          client.release(error instanceof Error ? error : true);
          throw error;
        }
      }
      preparedFor.set(client, names.generation);
      let inTransaction = false;
      const run = async (text: string, values: readonly unknown[]): Promise<pg.QueryResult> => {
        const name = names.nameOf(text);
        const config: pg.QueryConfig = name === undefined ? { text, values: [...values] } : { name, text, values: [...values] };
        try {
          return await (client as Queryable).query(config);
        } catch (error) {
          if (name === undefined || !isStalePreparedStatement(error)) throw error;
          names.renew();
          if (inTransaction) throw error;
          return (client as Queryable).query({ text, values: [...values] });
        }
      };
      const wrapped = {
        query(textOrCursor: unknown, values?: readonly unknown[]) {
          if (typeof textOrCursor !== 'string') return (client.query as (q: unknown) => unknown)(textOrCursor);
          if (OPENS.test(textOrCursor)) inTransaction = true;
          else if (CLOSES.test(textOrCursor)) inTransaction = false;
          return run(textOrCursor, values ?? []);
        },
        release() {
          client.release();
        },
      };
      return wrapped as unknown as PostgresPoolClient;
    },
    end: () => pool.end(),
  };
}
