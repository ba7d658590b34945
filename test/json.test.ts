/**
 * JSON at the database boundary (src/db/json.ts): U+0000 never reaches a jsonb column, and the
 * fast paths (no walk when the text cannot hold one) give exactly what the full walk gives.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { jsonb, parseJsonWithoutNul, withoutNul } from '../src/db/json.js';

/** Strings rich in the characters that matter here: NUL, backslashes, quotes, `u`, zeros. */
const tricky = fc.string({ unit: fc.constantFrom('\u0000', '\\', 'u', '0', '"', 'a', 'é', '\n'), maxLength: 12 });
const value = fc.letrec((tie) => ({
  node: fc.oneof({ depthSize: 'small' }, tricky, fc.integer(), fc.boolean(), fc.constant(null), tie('array'), tie('object')),
  array: fc.array(tie('node'), { maxLength: 4 }),
  object: fc.dictionary(tricky, tie('node'), { maxKeys: 4 }),
})).node;

/** The full walk, as before the fast path: every string value stripped. */
const slowJsonb = (v: unknown) => JSON.stringify(v, (_key, inner: unknown) => (typeof inner === 'string' ? inner.replace(/\u0000/g, '') : inner));

test('jsonb: the same text as the full walk, and never a NUL escape in string values', () => {
  fc.assert(
    fc.property(value, (v) => {
      assert.equal(jsonb(v), slowJsonb(v));
    }),
    { numRuns: 2000 },
  );
  assert.equal(jsonb({ text: 'a\u0000b' }), '{"text":"ab"}');
  // A person's literal backslash-u-0000 is text, kept as it was.
  assert.equal(jsonb({ text: '\\u0000' }), '{"text":"\\\\u0000"}');
});

test('parseJsonWithoutNul: the same value as parsing then walking, for any JSON text', () => {
  fc.assert(
    fc.property(value, (v) => {
      const text = JSON.stringify(v);
      assert.deepEqual(parseJsonWithoutNul(text), withoutNul(JSON.parse(text)));
    }),
    { numRuns: 2000 },
  );
  assert.deepEqual(parseJsonWithoutNul('{"k\\u0000ey":["x\\u0000y",{"z":"\\u0000"}]}'), { key: ['xy', { z: '' }] });
  assert.deepEqual(parseJsonWithoutNul('{"text":"\\\\u0000"}'), { text: '\\u0000' });
  assert.throws(() => parseJsonWithoutNul('{"unclosed":'), SyntaxError);
});
