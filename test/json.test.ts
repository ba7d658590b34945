/**
 * JSON at the database boundary (src/db/json.ts): U+0000 never reaches a jsonb column, and the
 * fast paths (no walk when the text cannot hold one) give exactly what the full walk gives.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { jsonb, JsonTooDeepError, MAX_JSON_DEPTH, parseStorableJson, storable } from '../src/db/json.js';

/** Strings rich in the characters that matter here: NUL, backslashes, quotes, `u`, zeros. */
const tricky = fc.string({ unit: fc.constantFrom('\u0000', '\\', 'u', '0', 'd', '8', '"', 'a', 'é', '\n', '\uD83D', '\uDE42', '🙂'), maxLength: 12 });
const value = fc.letrec((tie) => ({
  node: fc.oneof({ depthSize: 'small' }, tricky, fc.integer(), fc.boolean(), fc.constant(null), tie('array'), tie('object')),
  array: fc.array(tie('node'), { maxLength: 4 }),
  object: fc.dictionary(tricky, tie('node'), { maxKeys: 4 }),
})).node;

/** What jsonb must give for plain JSON values: the text of the value with every NUL gone (keys too). */
const slowJsonb = (v: unknown) => JSON.stringify(storable(v));

test('jsonb: the same text as the full walk, and never a NUL escape in keys or values', () => {
  fc.assert(
    fc.property(value, (v) => {
      assert.equal(jsonb(v), slowJsonb(v));
    }),
    { numRuns: 2000 },
  );
  assert.equal(jsonb({ text: 'a\u0000b' }), '{"text":"ab"}');
  assert.equal(jsonb({ 'te\u0000xt': { ['\u0000']: 1 } }), '{"text":{"":1}}');
  // Dates keep their JSON form on the slow path too.
  assert.equal(jsonb({ at: new Date('2026-12-01T00:00:00Z'), text: '\u0000' }), '{"at":"2026-12-01T00:00:00.000Z","text":""}');
  // A person's literal backslash-u-0000 is text, kept as it was.
  assert.equal(jsonb({ text: '\\u0000' }), '{"text":"\\\\u0000"}');
});

test('parseStorableJson: the same value as parsing then walking, for any JSON text', () => {
  fc.assert(
    fc.property(value, (v) => {
      const text = JSON.stringify(v);
      assert.deepEqual(parseStorableJson(text), storable(JSON.parse(text)));
    }),
    { numRuns: 2000 },
  );
  assert.deepEqual(parseStorableJson('{"k\\u0000ey":["x\\u0000y",{"z":"\\u0000"}]}'), { key: ['xy', { z: '' }] });
  assert.deepEqual(parseStorableJson('{"text":"\\\\u0000"}'), { text: '\\u0000' });
  assert.throws(() => parseStorableJson('{"unclosed":'), SyntaxError);
  // A "__proto__" key stays an ordinary key on both paths (never the object's prototype).
  for (const text of ['{"__proto__":{"x":1}}', '{"__proto__":{"x":"\\u0000"}}']) {
    const parsed = parseStorableJson(text) as Record<string, unknown>;
    assert.equal(Object.getPrototypeOf(parsed), Object.prototype, text);
    assert.ok(Object.hasOwn(parsed, '__proto__'), text);
  }
});

test('a lone surrogate (half an emoji) becomes U+FFFD in jsonb text and parsed bodies; whole emoji stay', () => {
  assert.equal(jsonb({ text: 'a\uD800b' }), '{"text":"a\uFFFDb"}');
  assert.equal(jsonb({ ['k\uDE00']: '🙂' }), '{"k\uFFFD":"🙂"}');
  assert.deepEqual(parseStorableJson('{"text":"\\ud800 \\ud83d\\ude42"}'), { text: '\uFFFD 🙂' });
  assert.equal(jsonb({ text: '🙂' }), '{"text":"🙂"}');
});

test(`a body nested deeper than ${MAX_JSON_DEPTH} levels is refused when parsed (turning it back into JSON would overflow the stack)`, () => {
  const nested = (n: number) => '['.repeat(n) + ']'.repeat(n);
  assert.deepEqual(JSON.stringify(parseStorableJson(nested(MAX_JSON_DEPTH))), nested(MAX_JSON_DEPTH));
  assert.throws(() => parseStorableJson(nested(MAX_JSON_DEPTH + 1)), JsonTooDeepError);
  assert.throws(() => parseStorableJson(nested(20_000)), JsonTooDeepError);
  // Brackets inside strings (escaped quotes too) are text, not depth.
  assert.deepEqual(parseStorableJson(JSON.stringify({ a: '[[[[\\"{{{{'.repeat(50) })), { a: '[[[[\\"{{{{'.repeat(50) });
});
