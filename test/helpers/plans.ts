/**
 * Reading how Postgres (or PGlite, which runs its planner) would run the statements the code
 * runs: a Kysely over the same pool that records every statement it compiles, and EXPLAIN of
 * a recorded statement with its own parameters (explained, not run again).
 */
import { Kysely, PostgresDialect, type CompiledQuery } from 'kysely';
import type pg from 'pg';
import type { Database } from '../../src/db/schema.js';

export type PlanNode = {
  'Node Type': string;
  'Index Name'?: string;
  'Relation Name'?: string;
  Alias?: string;
  'Index Cond'?: string;
  Plans?: PlanNode[];
};

/** A Kysely on `pool` and the statements it has run, in order. */
export function recordingDb(pool: pg.Pool): { db: Kysely<Database>; captured: CompiledQuery[] } {
  const captured: CompiledQuery[] = [];
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool }),
    log: (event) => {
      if (event.level === 'query') captured.push(event.query);
    },
  });
  return { db, captured };
}

/** Every node of the statement's plan, depth first. */
export async function planNodes(pool: pg.Pool, query: Pick<CompiledQuery, 'sql' | 'parameters'>): Promise<PlanNode[]> {
  const { rows } = await pool.query<{ 'QUERY PLAN': unknown }>(`explain (format json) ${query.sql}`, [...query.parameters]);
  const raw = rows[0]!['QUERY PLAN'];
  const nodes = (plan: PlanNode): PlanNode[] => [plan, ...(plan.Plans ?? []).flatMap(nodes)];
  return nodes(((typeof raw === 'string' ? JSON.parse(raw) : raw) as Array<{ Plan: PlanNode }>)[0]!.Plan);
}

/** The indexes a bitmap heap scan's bitmap is built from: its Bitmap* children, down to their index scans. */
const bitmapIndexes = (plan: PlanNode): string[] =>
  (plan.Plans ?? []).filter((child) => child['Node Type'].startsWith('Bitmap')).flatMap((child) => (child['Index Name'] === undefined ? bitmapIndexes(child) : [child['Index Name']]));

/** How each scan `pick` chooses reads its rows: an index's name, or 'seq' for the whole table. */
export async function readsOf(pool: pg.Pool, query: Pick<CompiledQuery, 'sql' | 'parameters'>, pick: (node: PlanNode) => boolean): Promise<string[]> {
  return (await planNodes(pool, query))
    .filter((n) => pick(n) && n['Node Type'].endsWith('Scan'))
    .flatMap((n) => {
      if (n['Index Name'] !== undefined) return [n['Index Name']];
      // A bitmap heap scan: the indexes its bitmap is built from (a BitmapAnd of several, say);
      // not a subquery's scans, which hang under the same node when its filter runs one.
      const bitmaps = bitmapIndexes(n);
      return bitmaps.length > 0 ? bitmaps : ['seq'];
    });
}
