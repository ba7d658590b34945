import { sql, type RawBuilder } from 'kysely';

/**
 * JSON for jsonb columns. Postgres refuses U+0000 inside jsonb text, and a lone UTF-16
 * surrogate (half an emoji, as a cut string or a crafted `\ud800` leaves), and a provider (or a
 * person) can send either: both are cleaned at every boundary so one character cannot crash
 * a webhook. NUL goes; a lone surrogate becomes U+FFFD, as UTF-8 encoding would make it.
 */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
const cleanString = (text: string) => text.replace(/\u0000/g, '').replace(LONE_SURROGATE, '\uFFFD');

/** `value` with every string and key cleaned (see above). */
export function storable<T>(value: T): T {
  if (typeof value === 'string') return cleanString(value) as T;
  if (Array.isArray(value)) return value.map((item) => storable(item)) as T;
  if (value !== null && typeof value === 'object') {
    // fromEntries defines own properties: a "__proto__" key stays a key, as JSON.parse makes it.
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [cleanString(key), storable(inner)])) as T;
  }
  return value;
}

/**
 * JSON text can carry U+0000 only as the escape `\u0000` (a raw control character is not
 * valid JSON), and JSON.stringify writes a lone surrogate only as an escape `\udXXX`: text
 * without those sequences needs no cleaning, and most has none, so it skips the walk. (A
 * person's literal backslash-u-0000, or an escaped but whole surrogate pair, takes the walk
 * too, which changes nothing.)
 */
const mayNeedCleaning = (json: string) => json.includes('\\u0000') || /\\u[dD][89a-fA-F]/.test(json);

/** How deep a body may nest (Meta's payloads: about 10 levels). Deeper is refused when parsed. */
export const MAX_JSON_DEPTH = 64;

/** A body nested deeper than MAX_JSON_DEPTH: turning it back into JSON would overflow the stack. */
export class JsonTooDeepError extends SyntaxError {
  constructor() {
    super(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
    this.name = 'JsonTooDeepError';
  }
}

/** Whether JSON text opens more than `max` arrays or objects inside each other (no recursion). */
function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i += 1; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) {
      depth += 1;
      if (depth > max) return true;
    } else if (c === 125 || c === 93) depth -= 1;
  }
  return false;
}

/**
 * JSON.parse, then every string and key cleaned (see above). Throws as JSON.parse does, and
 * JsonTooDeepError for a body nested deeper than MAX_JSON_DEPTH.
 */
export function parseStorableJson(text: string): unknown {
  const value = JSON.parse(text) as unknown;
  if (nestsDeeperThan(text, MAX_JSON_DEPTH)) throw new JsonTooDeepError();
  return mayNeedCleaning(text) ? storable(value) : value;
}

/** JSON text for a jsonb column: no U+0000, no lone surrogate. */
export function jsonb(value: unknown): string {
  const text = JSON.stringify(value);
  if (text === undefined || !mayNeedCleaning(text)) return text;
  // The replacer sees each value after its toJSON (a Date is a string by then); keys too.
  return JSON.stringify(value, (_key, inner: unknown) => {
    if (typeof inner === 'string') return cleanString(inner);
    if (inner === null || typeof inner !== 'object' || Array.isArray(inner)) return inner;
    if (Object.keys(inner).every((key) => cleanString(key) === key)) return inner;
    return Object.fromEntries(Object.entries(inner).map(([key, v]) => [cleanString(key), v as unknown]));
  });
}

/** A column type `rowsOf` can carry. */
export type RowsColumnType = 'uuid' | 'text' | 'integer' | 'timestamptz' | 'jsonb';

/**
 * Rows for a statement to join, as one array parameter per column:
 * `unnest($1::uuid[], $2::text[], ...) as alias(col, ...)`, the columns in the order given.
 *
 * The planner reads how many elements each array holds (unnest's row estimate), so it knows
 * how many rows come: joined to a table by its key, they are looked up through the index one
 * by one. A recordset made from one JSON parameter (jsonb_to_recordset) always counts as 100
 * rows, whatever it holds: with a filter thought selective on the table's side, the planner
 * chose a nested loop that read the whole recordset again for each row (81 rows: 6,480
 * comparisons), or a scan of the whole table.
 *
 * Values are cleaned as jsonb() cleans them: text loses U+0000 and lone surrogates, and a
 * jsonb column's values are written as jsonb() writes them. `null` and `undefined` are NULL.
 */
export function rowsOf<R extends Record<string, unknown>>(alias: string, rows: readonly R[], columns: { readonly [K in keyof R & string]?: RowsColumnType }): RawBuilder<unknown> {
  const named = Object.entries(columns) as Array<[keyof R & string, RowsColumnType]>;
  if (named.length === 0) throw new Error('rowsOf: no columns');
  const arrays = named.map(([name, type]) => {
    const values = rows.map((row) => {
      const value = row[name];
      if (value === null || value === undefined) return null;
      if (type === 'jsonb') return jsonb(value);
      if (type === 'text' && typeof value === 'string') return cleanString(value);
      return value;
    });
    return sql`${values}::${sql.raw(type)}[]`;
  });
  return sql`unnest(${sql.join(arrays)}) as ${sql.id(alias)}(${sql.join(named.map(([name]) => sql.id(name)))})`;
}

/**
 * `column = any($1::type[])`: keys as one array parameter, not an IN list of one parameter
 * each (a statement of a group of callbacks named 72 to 256 keys that way: each a node for the
 * query builder to compile and a parameter for Postgres to bind). Postgres reads both alike.
 * The statement's text is also the same whatever the count: one entry in pg_stat_statements
 * (and one plan to cache, were statements prepared), not one for each length of the list.
 */
export function anyOf(column: string, keys: readonly string[], type: 'uuid' | 'text'): RawBuilder<boolean> {
  return sql<boolean>`${sql.ref(column)} = any(${[...keys]}::${sql.raw(type)}[])`;
}
