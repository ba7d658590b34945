/**
 * Statements that repeat are run as named prepared statements: Postgres then parses and plans
 * each once per connection, and once it has run a few times with a generic plan as cheap as
 * the custom ones, keeps that plan. The hot paths (a group of STK callbacks, recording sends)
 * are written to have one text however many rows they carry (`= any($n)` lists and
 * jsonb_to_recordset rows, not one parameter per key), so they repeat exactly. Parsing and
 * planning them was about a sixth of Postgres's CPU under the callbacks benchmark
 * (pg_stat_statements plan time; perf).
 *
 * Only a text seen REPEATS_BEFORE_NAMING times gets a name, and at most MAX_NAMED texts ever
 * do in this process: a statement whose text changes with its data (an IN list of its own
 * length) is not prepared at all, so no connection collects prepared statements without end.
 * Only calls of a text and its values, with no callback, are named (Kysely's, and on the
 * embedded database pool.query's, which hands each call to its one client so); pg-pool's own
 * `pool.query` on Postgres (pg-boss) and parameterless statements (BEGIN, COMMIT) go as before.
 *
 * Named statements live in the server session: a transaction-mode pooler (PgBouncer) does not
 * keep them (README, DATABASE_URL).
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';

/** Uses of one text before it is named (the first few run as before: most texts never repeat). */
export const REPEATS_BEFORE_NAMING = 3;
/** Texts named at most, per process; each connection prepares those it runs. */
export const MAX_NAMED = 64;
/** Distinct texts counted at most before the count starts again (texts that never repeat). */
const MAX_COUNTED = 2_000;

export type StatementNames = {
  /** The name for `text` once it has repeated enough (undefined before, or past MAX_NAMED). */
  nameFor(text: string): string | undefined;
  /** How many texts have a name. */
  readonly named: number;
};

export function statementNames(options: { repeats?: number; max?: number } = {}): StatementNames {
  const repeats = options.repeats ?? REPEATS_BEFORE_NAMING;
  const max = options.max ?? MAX_NAMED;
  const names = new Map<string, string>();
  const uses = new Map<string, number>();
  return {
    nameFor(text) {
      const name = names.get(text);
      if (name !== undefined || names.size >= max) return name;
      const used = (uses.get(text) ?? 0) + 1;
      if (used < repeats) {
        if (uses.size >= MAX_COUNTED) uses.clear();
        uses.set(text, used);
        return undefined;
      }
      uses.delete(text);
      // A digest of the text: the same text always gets the same name (pg refuses one name for two texts).
      const named = `iq_${createHash('sha256').update(text).digest('hex').slice(0, 32)}`;
      names.set(text, named);
      return named;
    },
    get named() {
      return names.size;
    },
  };
}

type QueryFn = (...args: unknown[]) => unknown;

/** Every client `pool` connects from now on runs repeated Kysely statements by name. */
export function prepareRepeatedStatements(pool: pg.Pool, names: StatementNames = statementNames()): void {
  pool.on('connect', (client: pg.PoolClient) => {
    const query = client.query.bind(client) as QueryFn;
    const named: QueryFn = (...args) => {
      const [text, values] = args;
      if (args.length === 2 && typeof text === 'string' && Array.isArray(values) && values.length > 0) {
        const name = names.nameFor(text);
        if (name !== undefined) return query({ name, text }, values);
      }
      return query(...args);
    };
    client.query = named as typeof client.query;
  });
}
