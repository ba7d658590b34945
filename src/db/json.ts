import { sql, type RawBuilder } from 'kysely';

/**
 * JSON for jsonb columns. Postgres refuses U+0000 inside jsonb text, and a provider (or a
 * person) can send it: strip it at every boundary so one character cannot crash a webhook.
 */
export function withoutNul<T>(value: T): T {
  if (typeof value === 'string') return value.replace(/\u0000/g, '') as T;
  if (Array.isArray(value)) return value.map((item) => withoutNul(item)) as T;
  if (value !== null && typeof value === 'object') {
    // fromEntries defines own properties: a "__proto__" key stays a key, as JSON.parse makes it.
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key.replace(/\u0000/g, ''), withoutNul(inner)])) as T;
  }
  return value;
}

/**
 * JSON text can only carry U+0000 as the escape `\u0000` (a raw control character is not
 * valid JSON), so text without that sequence has none, and most has none: it skips the walk.
 * (A person's literal backslash-u-0000 takes the walk too, which changes nothing.)
 */
const mayHoldNul = (json: string) => json.includes('\\u0000');

/** JSON.parse, then U+0000 removed from every string and key. Throws as JSON.parse does. */
export function parseJsonWithoutNul(text: string): unknown {
  const value = JSON.parse(text) as unknown;
  return mayHoldNul(text) ? withoutNul(value) : value;
}

/** JSON text for a jsonb column, without U+0000. */
export function jsonb(value: unknown): string {
  const text = JSON.stringify(value);
  if (text === undefined || !mayHoldNul(text)) return text;
  // The replacer sees each value after its toJSON (a Date is a string by then); keys too.
  return JSON.stringify(value, (_key, inner: unknown) => {
    if (typeof inner === 'string') return inner.replace(/\u0000/g, '');
    if (inner === null || typeof inner !== 'object' || Array.isArray(inner)) return inner;
    if (!Object.keys(inner).some((key) => key.includes('\u0000'))) return inner;
    return Object.fromEntries(Object.entries(inner).map(([key, v]) => [key.replace(/\u0000/g, ''), v as unknown]));
  });
}

/**
 * `column in (keys)`, to go with a join on jsonb_to_recordset(...): the planner cannot see how
 * many rows a recordset holds and, without this list, scans the whole table instead of using
 * the key's index (4 ms a statement at 5,000 rows, and growing with the table).
 */
export function keyIn(column: string, keys: readonly string[]): RawBuilder<boolean> {
  return sql<boolean>`${sql.ref(column)} in (${sql.join(keys)})`;
}
