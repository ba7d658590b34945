/**
 * The pure input parsers (src/domain/parse.ts): every spelling in CONVERSATION.md
 * ("Merchant commands", "Input the bot understands") table-driven, then properties
 * with fast-check (no throws on any string, round trips, idempotence).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import {
  DEFAULT_MAX_AMOUNT,
  formatAmount,
  formatInvoiceNumber,
  formatPhone,
  parseAmount,
  parseCommand,
  parseDescription,
  parseInvoiceNumber,
  parsePhone,
  type Command,
  type Msisdn,
  type ParseResult,
} from '../src/domain/parse.js';

const okOf = <T>(value: T): ParseResult<T, never> => ({ ok: true, value });
const errOf = <E extends string>(error: E): ParseResult<never, E> => ({ ok: false, error });

// ---------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------

/** Any UTF-16 code unit, lone surrogates included. */
const utf16String = (maxLength: number): fc.Arbitrary<string> =>
  fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map(c => String.fromCharCode(c)), maxLength });

/** Strings of every flavour fast-check offers (fc.fullUnicodeString is fc.string({ unit: 'binary' }) in v4). */
const anyString: fc.Arbitrary<string> = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.string({ unit: 'grapheme' }),
  utf16String(64),
);

/** Strings made of the parsers' own vocabulary: they hit the interesting branches. */
const VOCAB = [
  'invoice', 'ankara', 'status', 'hali', 'remind', 'kumbusha', 'cancel', 'ghairi', 'pay', 'lipa',
  'language', 'lugha', 'en', 'sw', 'help', 'yes', 'no', 'zangu', 'mpya', 'KES', 'Ksh', 'sh', 'bob',
  '/=', 'k', 'K', '1.5k', '0712', '345', '678', '+254', '254', '0', '7', '1', '1,500', '1500.50',
  '-', '.', ',', '#', 'INV-0007', 'inv', '😀', '👍🏽', '🇰🇪', '\u200d', '\ufe0f', '!', '?', '\n', '\t', '\u00a0',
] as const;
const vocabString: fc.Arbitrary<string> = fc
  .array(fc.tuple(fc.constantFrom(...VOCAB), fc.constantFrom('', ' ', '  ', '\n')), { maxLength: 12 })
  .map(parts => parts.map(([w, sep]) => w + sep).join(''));

const everyString: fc.Arbitrary<string> = fc.oneof(anyString, vocabString);

const longString: fc.Arbitrary<string> = fc.oneof(
  fc.string({ minLength: 4000, maxLength: 6000 }),
  fc.string({ unit: 'binary', minLength: 4000, maxLength: 6000 }),
  fc.array(fc.constantFrom(...VOCAB), { minLength: 800, maxLength: 1200 }).map(ws => ws.join(' ')),
);

/** A valid Kenyan mobile number, normalised. */
const msisdn: fc.Arbitrary<Msisdn> = fc
  .tuple(fc.constantFrom('7', '1'), fc.string({ unit: fc.constantFrom(...'0123456789'), minLength: 8, maxLength: 8 }))
  .map(([first, rest]) => `254${first}${rest}`);

/** `national` (9 digits) in one of the accepted spellings, with random separators between digits. */
const spelledPhone = (national: string): fc.Arbitrary<string> =>
  fc
    .tuple(
      fc.constantFrom('0', '+254', '254', ''),
      fc.array(fc.constantFrom('', '', '', ' ', '-', '.', ' - '), { minLength: 12, maxLength: 12 }),
      fc.constantFrom('', ' ', '  '),
      fc.boolean(),
    )
    .map(([prefix, seps, pad, parens]) => {
      const digits = [...national].map((d, i) => d + (i < national.length - 1 ? (seps[i] ?? '') : '')).join('');
      const body = parens ? `(${digits.slice(0, 3)})${digits.slice(3)}` : digits;
      return `${pad}${prefix}${seps[11] === ' ' && prefix !== '' ? ' ' : ''}${body}${pad}`;
    });

const amountInRange: fc.Arbitrary<number> = fc.integer({ min: 1, max: DEFAULT_MAX_AMOUNT });

// ---------------------------------------------------------------------------
// Phone
// ---------------------------------------------------------------------------

describe('parsePhone', () => {
  const accepted: ReadonlyArray<readonly [string, Msisdn]> = [
    ['0712345678', '254712345678'],
    ['0712 345 678', '254712345678'],
    ['+254712345678', '254712345678'],
    ['254712345678', '254712345678'],
    ['712345678', '254712345678'],
    ['0112345678', '254112345678'],
    ['112345678', '254112345678'],
    ['+254 112 345 678', '254112345678'],
    ['254112345678', '254112345678'],
    ['0101234567', '254101234567'],
    ['  0712345678  ', '254712345678'],
    ['0712-345-678', '254712345678'],
    ['0712.345.678', '254712345678'],
    ['(0712) 345 678', '254712345678'],
    ['+254 (712) 345-678', '254712345678'],
    ['0712\u00a0345\u00a0678', '254712345678'],
    ['0799999999', '254799999999'],
    ['0700000000', '254700000000'],
  ];
  for (const [input, expected] of accepted) {
    test(`accepts ${JSON.stringify(input)}`, () => {
      assert.deepEqual(parsePhone(input), okOf(expected));
    });
  }

  const refused: readonly string[] = [
    '',
    '   ',
    '0201234567', // Nairobi landline
    '+254201234567',
    '254201234567',
    '201234567',
    '0512345678',
    '0912345678',
    '071234567', // too short
    '07123456789', // too long
    '25471234567',
    '2547123456789',
    '+25471234567',
    '71234567',
    '7123456789',
    '+255712345678', // Tanzania
    '+256712345678', // Uganda
    '+1 712 345 6789',
    '00254712345678',
    '+0712345678',
    '254+712345678',
    '0712345678+',
    '07l2345678', // letter l
    '0712345678a',
    'phone',
    '0712/345/678',
    '0712_345_678',
    '\u0660\u0667\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668', // Arabic-Indic digits
    '０７１２３４５６７８', // full-width digits
    '0712345678 0712345678',
    ' '.repeat(100) + '0712345678',
  ];
  for (const input of refused) {
    test(`refuses ${JSON.stringify(input.length > 40 ? `${input.slice(0, 20)}...` : input)}`, () => {
      assert.deepEqual(parsePhone(input), errOf('invalid_phone'));
    });
  }

  test('formatPhone', () => {
    assert.equal(formatPhone('254712345678'), '0712 345 678');
    assert.equal(formatPhone('254112345678'), '0112 345 678');
    assert.equal(formatPhone('254100000001'), '0100 000 001');
  });

  test('property: never throws; refusals are invalid_phone, acceptances are 12-digit 2547/2541', () => {
    fc.assert(
      fc.property(fc.oneof(everyString, longString), s => {
        const r = parsePhone(s);
        if (r.ok) assert.match(r.value, /^254[17]\d{8}$/);
        else assert.equal(r.error, 'invalid_phone');
      }),
      { numRuns: 2000 },
    );
  });

  test('property: every accepted spelling of a valid number parses to it', () => {
    fc.assert(
      fc.property(
        msisdn.chain(m => fc.tuple(fc.constant(m), spelledPhone(m.slice(3)))),
        ([m, spelled]) => {
          assert.deepEqual(parsePhone(spelled), okOf(m), spelled);
        },
      ),
      { numRuns: 2000 },
    );
  });

  test('property: 9 national digits that do not start with 7 or 1 are refused in every spelling', () => {
    const national = fc
      .tuple(fc.constantFrom(...'02345689'), fc.string({ unit: fc.constantFrom(...'0123456789'), minLength: 8, maxLength: 8 }))
      .map(([a, b]) => a + b);
    fc.assert(
      fc.property(national.chain(spelledPhone), s => {
        assert.deepEqual(parsePhone(s), errOf('invalid_phone'), s);
      }),
      { numRuns: 1000 },
    );
  });

  test('property: valid numbers with a digit too many or too few are refused', () => {
    fc.assert(
      fc.property(msisdn, fc.constantFrom('0', '+254', '254', ''), fc.boolean(), fc.integer({ min: 0, max: 9 }), (m, prefix, longer, d) => {
        const national = m.slice(3);
        const wrong = longer ? national + String(d) : national.slice(0, 8);
        assert.deepEqual(parsePhone(prefix + wrong), errOf('invalid_phone'), prefix + wrong);
      }),
      { numRuns: 1000 },
    );
  });

  test('property: round trip: parsePhone(formatPhone(m)) == m and parsePhone(m) == m', () => {
    fc.assert(
      fc.property(msisdn, m => {
        assert.deepEqual(parsePhone(formatPhone(m)), okOf(m));
        assert.deepEqual(parsePhone(m), okOf(m));
        assert.deepEqual(parsePhone(`+${m}`), okOf(m));
      }),
      { numRuns: 2000 },
    );
  });

  test('property: whatever parsePhone accepts is a fixed point and survives formatPhone', () => {
    const phoneish = fc.string({ unit: fc.constantFrom(...'+0123456789 -.()'), maxLength: 20 });
    let accepted = 0;
    fc.assert(
      fc.property(fc.oneof(phoneish, msisdn.chain(m => spelledPhone(m.slice(3))), everyString), s => {
        const r = parsePhone(s);
        if (!r.ok) return;
        accepted++;
        assert.deepEqual(parsePhone(r.value), okOf(r.value));
        assert.deepEqual(parsePhone(formatPhone(r.value)), okOf(r.value));
      }),
      { numRuns: 3000 },
    );
    assert.ok(accepted > 100, `only ${accepted} inputs were accepted: the property was barely exercised`);
  });
});

// ---------------------------------------------------------------------------
// Amount
// ---------------------------------------------------------------------------

describe('parseAmount', () => {
  const accepted: ReadonlyArray<readonly [string, number]> = [
    ['1500', 1500],
    ['1,500', 1500],
    ['KES 1500', 1500],
    ['kes1500', 1500],
    ['Ksh1,500', 1500],
    ['KSh 1,500', 1500],
    ['Sh 1500', 1500],
    ['1500/=', 1500],
    ['1500 bob', 1500],
    ['1.5k', 1500],
    ['2k', 2000],
    ['1.25k', 1250],
    ['10K', 10000],
    ['1500.00', 1500],
    ['1500.0', 1500],
    ['1,500.00', 1500],
    ['  1500  ', 1500],
    ['1', 1],
    ['250000', 250000],
    ['250,000', 250000],
    ['250k', 250000],
    ['0.5k', 500],
    ['0.001k', 1],
    ['1.2340k', 1234],
    ['Kshs. 2,000', 2000],
    ['Ksh.200', 200],
    ['KES 1,500/=', 1500],
    ['1500 KES', 1500],
    ['1500/-', 1500],
    ['1500sh', 1500],
    ['KES 1.5k', 1500],
    ['1.5 k', 1500],
    ['007', 7],
    ['Ksh 250,000.00', 250000],
  ];
  for (const [input, expected] of accepted) {
    test(`accepts ${JSON.stringify(input)} as ${expected}`, () => {
      assert.deepEqual(parseAmount(input), okOf(expected));
    });
  }

  const refused: ReadonlyArray<readonly [string, 'invalid_amount' | 'decimal_amount' | 'amount_too_small' | 'amount_too_large']> = [
    ['1500.50', 'decimal_amount'],
    ['1,500.5', 'decimal_amount'],
    ['1500.01', 'decimal_amount'],
    ['KES 99.99', 'decimal_amount'],
    ['0.5', 'decimal_amount'],
    ['1.2345k', 'decimal_amount'],
    ['0.0005k', 'decimal_amount'],
    ['0', 'amount_too_small'],
    ['0.00', 'amount_too_small'],
    ['0k', 'amount_too_small'],
    ['KES 0', 'amount_too_small'],
    ['-1', 'amount_too_small'],
    ['-1500', 'amount_too_small'],
    ['-1,500', 'amount_too_small'],
    ['KES -1500', 'amount_too_small'],
    ['-1.5k', 'amount_too_small'],
    ['\u22121500', 'amount_too_small'],
    ['250001', 'amount_too_large'],
    ['250,001', 'amount_too_large'],
    ['251k', 'amount_too_large'],
    ['1500k', 'amount_too_large'],
    ['9'.repeat(30), 'amount_too_large'],
    ['9'.repeat(5000), 'amount_too_large'],
    ['', 'invalid_amount'],
    ['   ', 'invalid_amount'],
    ['abc', 'invalid_amount'],
    ['KES', 'invalid_amount'],
    ['k', 'invalid_amount'],
    ['1,50,0', 'invalid_amount'],
    ['1,50', 'invalid_amount'],
    ['1,5000', 'invalid_amount'],
    [',500', 'invalid_amount'],
    ['01,500', 'invalid_amount'],
    ['1e3', 'invalid_amount'],
    ['1E3', 'invalid_amount'],
    ['0x10', 'invalid_amount'],
    ['1500.', 'invalid_amount'],
    ['.5', 'invalid_amount'],
    ['1.5.0', 'invalid_amount'],
    ['1 500', 'invalid_amount'],
    ['1500 flour', 'invalid_amount'],
    ['--1500', 'invalid_amount'],
    ['+1500', 'invalid_amount'],
    ['Infinity', 'invalid_amount'],
    ['NaN', 'invalid_amount'],
    ['1,5k', 'invalid_amount'],
    ['1.5kk', 'invalid_amount'],
    ['USD 1500', 'invalid_amount'],
    ['\u0661\u0665\u0660\u0660', 'invalid_amount'],
    ['１５００', 'invalid_amount'],
  ];
  for (const [input, error] of refused) {
    test(`refuses ${JSON.stringify(input.length > 40 ? `${input.slice(0, 20)}...` : input)} with ${error}`, () => {
      assert.deepEqual(parseAmount(input), errOf(error));
    });
  }

  test('max is configurable', () => {
    assert.deepEqual(parseAmount('1000', 1000), okOf(1000));
    assert.deepEqual(parseAmount('1001', 1000), errOf('amount_too_large'));
    assert.deepEqual(parseAmount('300,000', 500_000), okOf(300_000));
    assert.deepEqual(parseAmount('300,000'), errOf('amount_too_large'));
    assert.deepEqual(parseAmount('1.5k', 1499), errOf('amount_too_large'));
    assert.equal(DEFAULT_MAX_AMOUNT, 250_000);
  });

  test('formatAmount', () => {
    assert.equal(formatAmount(1500), 'KES 1,500');
    assert.equal(formatAmount(1), 'KES 1');
    assert.equal(formatAmount(999), 'KES 999');
    assert.equal(formatAmount(1000), 'KES 1,000');
    assert.equal(formatAmount(250000), 'KES 250,000');
    assert.equal(formatAmount(1234567), 'KES 1,234,567');
  });

  const ERRORS = new Set(['invalid_amount', 'decimal_amount', 'amount_too_small', 'amount_too_large']);
  test('property: never throws on any string; results are whole shillings within 1..max', () => {
    fc.assert(
      fc.property(fc.oneof(everyString, longString), fc.option(fc.integer({ min: 1, max: 10_000_000 }), { nil: undefined }), (s, max) => {
        const r = parseAmount(s, max);
        if (r.ok) {
          assert.ok(Number.isSafeInteger(r.value) && r.value >= 1 && r.value <= (max ?? DEFAULT_MAX_AMOUNT), `${s} -> ${r.value}`);
        } else {
          assert.ok(ERRORS.has(r.error), r.error);
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('property: parseAmount(String(n)) == n and parseAmount(formatAmount(n)) == n for n in 1..max', () => {
    fc.assert(
      fc.property(amountInRange, n => {
        assert.deepEqual(parseAmount(String(n)), okOf(n));
        assert.deepEqual(parseAmount(formatAmount(n)), okOf(n));
      }),
      { numRuns: 5000 },
    );
  });

  test('property: the boundaries 1 and max round-trip', () => {
    for (const n of [1, 2, 999, 1000, 1001, DEFAULT_MAX_AMOUNT - 1, DEFAULT_MAX_AMOUNT]) {
      assert.deepEqual(parseAmount(String(n)), okOf(n));
      assert.deepEqual(parseAmount(formatAmount(n)), okOf(n));
    }
  });

  test('property: with a configured max, n <= max is accepted and n > max is too large', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5_000_000 }), fc.integer({ min: 1, max: 5_000_000 }), (n, max) => {
        const expected = n <= max ? okOf(n) : errOf('amount_too_large');
        assert.deepEqual(parseAmount(String(n), max), expected);
        assert.deepEqual(parseAmount(formatAmount(n), max), expected);
      }),
      { numRuns: 2000 },
    );
  });

  test('property: every currency spelling of n parses to n', () => {
    const spelling = fc.tuple(
      fc.constantFrom('', 'KES ', 'kes', 'Ksh', 'KSh ', 'Kshs. ', 'Sh ', 'sh'),
      fc.boolean(),
      fc.constantFrom('', '/=', ' /=', ' bob', '.00', '.0', '/-'),
    );
    fc.assert(
      fc.property(amountInRange, spelling, (n, [prefix, grouped, suffix]) => {
        const number = grouped ? formatAmount(n).slice('KES '.length) : String(n);
        const s = prefix + number + suffix;
        assert.deepEqual(parseAmount(s), okOf(n), s);
      }),
      { numRuns: 3000 },
    );
  });

  test('property: thousands with k: "<n/1000>k" parses to n', () => {
    fc.assert(
      fc.property(amountInRange, fc.constantFrom('k', 'K', ' k'), fc.boolean(), (n, k, trim) => {
        let frac = String(n % 1000).padStart(3, '0');
        if (trim) frac = frac.replace(/0+$/, '');
        const s = `${Math.floor(n / 1000)}${frac === '' ? '' : `.${frac}`}${k}`;
        assert.deepEqual(parseAmount(s), okOf(n), s);
      }),
      { numRuns: 3000 },
    );
  });

  test('property: a non-zero fraction of a shilling is decimal_amount', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: DEFAULT_MAX_AMOUNT }), fc.integer({ min: 1, max: 99 }), (n, cents) => {
        const s = `${n}.${String(cents).padStart(2, '0')}`;
        assert.deepEqual(parseAmount(s), errOf('decimal_amount'), s);
      }),
      { numRuns: 2000 },
    );
  });

  test('property: zero and negatives are amount_too_small', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000_000 }), fc.boolean(), (n, grouped) => {
        const number = grouped ? formatAmount(n).slice('KES '.length) : String(n);
        assert.deepEqual(parseAmount(`-${number}`), errOf('amount_too_small'));
        assert.deepEqual(parseAmount(`KES -${number}`), errOf('amount_too_small'));
      }),
      { numRuns: 1000 },
    );
    assert.deepEqual(parseAmount('0'), errOf('amount_too_small'));
  });
});

// ---------------------------------------------------------------------------
// Description
// ---------------------------------------------------------------------------

describe('parseDescription', () => {
  const accepted: ReadonlyArray<readonly [string, string]> = [
    ['flour', 'flour'],
    ['  2kg flour  ', '2kg flour'],
    ['Unga\n\n wa  ngano', 'Unga wa ngano'],
    ['a\tb\r\nc', 'a b c'],
    ['x', 'x'],
    ['a'.repeat(100), 'a'.repeat(100)],
    ['😀'.repeat(100), '😀'.repeat(100)],
    [` ${'b'.repeat(100)} `, 'b'.repeat(100)],
    [`${'c'.repeat(50)}      ${'c'.repeat(49)}`, `${'c'.repeat(50)} ${'c'.repeat(49)}`],
    ['Keki ya harusi 🎂!', 'Keki ya harusi 🎂!'],
  ];
  for (const [input, expected] of accepted) {
    test(`accepts ${JSON.stringify(input.slice(0, 30))}`, () => {
      assert.deepEqual(parseDescription(input), okOf(expected));
    });
  }

  const refused: ReadonlyArray<readonly [string, 'description_empty' | 'description_too_long']> = [
    ['', 'description_empty'],
    ['   ', 'description_empty'],
    ['\n\t\r\n', 'description_empty'],
    ['\u00a0\u2028', 'description_empty'],
    ['a'.repeat(101), 'description_too_long'],
    ['😀'.repeat(101), 'description_too_long'],
    [`${'a'.repeat(50)} ${'a'.repeat(50)}`, 'description_too_long'],
    ['x'.repeat(5000), 'description_too_long'],
  ];
  for (const [input, error] of refused) {
    test(`refuses ${JSON.stringify(input.slice(0, 30))} with ${error}`, () => {
      assert.deepEqual(parseDescription(input), errOf(error));
    });
  }

  test('property: never throws; accepted values are trimmed, single-spaced, 1..100 code points', () => {
    fc.assert(
      fc.property(fc.oneof(everyString, longString, fc.string({ minLength: 90, maxLength: 220 })), s => {
        const r = parseDescription(s);
        if (r.ok) {
          assert.equal(r.value, r.value.trim());
          assert.doesNotMatch(r.value, /\s\s|[\t\n\r]/);
          const length = [...r.value].length;
          assert.ok(length >= 1 && length <= 100, `length ${length}`);
        } else {
          assert.ok(r.error === 'description_empty' || r.error === 'description_too_long');
          assert.equal(r.error === 'description_empty', s.trim() === '');
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('property: idempotent', () => {
    fc.assert(
      fc.property(fc.oneof(everyString, fc.string({ minLength: 90, maxLength: 220 })), s => {
        const r = parseDescription(s);
        if (r.ok) assert.deepEqual(parseDescription(r.value), r);
      }),
      { numRuns: 3000 },
    );
  });

  test('property: the limit counts code points, not UTF-16 units', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', minLength: 1, maxLength: 130 }).map(s => s.replace(/\s/g, 'x')), s => {
        const expected = [...s].length <= 100 ? okOf(s) : errOf('description_too_long');
        assert.deepEqual(parseDescription(s), expected);
      }),
      { numRuns: 2000 },
    );
  });
});

// ---------------------------------------------------------------------------
// Invoice numbers
// ---------------------------------------------------------------------------

describe('parseInvoiceNumber', () => {
  const accepted: ReadonlyArray<readonly [string, number]> = [
    ['7', 7],
    ['0007', 7],
    ['inv-0007', 7],
    ['INV-0007', 7],
    ['INV7', 7],
    ['inv 7', 7],
    ['#7', 7],
    ['Inv-7', 7],
    ['inv #7', 7],
    ['invoice 7', 7],
    ['  INV-0007  ', 7],
    ['1', 1],
    ['INV-0001', 1],
    ['9999', 9999],
    ['INV-9999', 9999],
    ['00000042', 42],
    // Past INV-9999 the numbers go on (INV-10000 is the 10,000th invoice): still read.
    ['10000', 10000],
    ['INV-10000', 10000],
    ['INV-12345', 12345],
    ['inv 99999999', 99_999_999],
  ];
  for (const [input, expected] of accepted) {
    test(`accepts ${JSON.stringify(input)}`, () => {
      assert.deepEqual(parseInvoiceNumber(input), okOf(expected));
    });
  }

  const refused: readonly string[] = [
    '',
    ' ',
    '0',
    'INV-0000',
    '100000000',
    'INV-100000000',
    '-7',
    '7.5',
    '7a',
    'seven',
    'inv',
    'INV-',
    '#',
    'inv--7',
    'INV-0007 x',
    'ABC-0007',
    '1e3',
    '٧',
    '9'.repeat(5000),
  ];
  for (const input of refused) {
    test(`refuses ${JSON.stringify(input.slice(0, 20))}`, () => {
      assert.deepEqual(parseInvoiceNumber(input), errOf('invalid_invoice_number'));
    });
  }

  test('formatInvoiceNumber', () => {
    assert.equal(formatInvoiceNumber(7), 'INV-0007');
    assert.equal(formatInvoiceNumber(1), 'INV-0001');
    assert.equal(formatInvoiceNumber(9999), 'INV-9999');
    assert.equal(formatInvoiceNumber(12345), 'INV-12345');
    assert.ok(formatInvoiceNumber(9999).length <= 12);
  });

  test('property: never throws; accepted values are 1..99,999,999', () => {
    fc.assert(
      fc.property(fc.oneof(everyString, longString), s => {
        const r = parseInvoiceNumber(s);
        if (r.ok) assert.ok(Number.isInteger(r.value) && r.value >= 1 && r.value <= 99_999_999);
        else assert.equal(r.error, 'invalid_invoice_number');
      }),
      { numRuns: 2000 },
    );
  });

  test('property: parseInvoiceNumber(formatInvoiceNumber(n)) == n, in every spelling', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 99_999_999 }), fc.constantFrom('', 'INV-', 'inv-', 'INV', 'inv ', '#'), fc.boolean(), (n, prefix, pad) => {
        assert.deepEqual(parseInvoiceNumber(formatInvoiceNumber(n)), okOf(n));
        const digits = pad ? String(n).padStart(4, '0') : String(n);
        assert.deepEqual(parseInvoiceNumber(prefix + digits), okOf(n), prefix + digits);
      }),
      { numRuns: 3000 },
    );
  });

  test('property: numbers above 99,999,999 (longer than an AccountReference) are refused', () => {
    fc.assert(
      fc.property(fc.integer({ min: 100_000_000, max: Number.MAX_SAFE_INTEGER }), n => {
        assert.deepEqual(parseInvoiceNumber(formatInvoiceNumber(n)), errOf('invalid_invoice_number'));
        assert.deepEqual(parseInvoiceNumber(String(n)), errOf('invalid_invoice_number'));
      }),
      { numRuns: 1000 },
    );
  });
});

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

describe('parseCommand', () => {
  const table: ReadonlyArray<readonly [string, Command]> = [
    // help
    ...['help', 'msaada', 'menu', 'menyu', 'hi', 'hello', 'habari', 'start'].map(w => [w, { kind: 'help' }] as const),
    ['HELP', { kind: 'help' }],
    ['Help!', { kind: 'help' }],
    ['  msaada?  ', { kind: 'help' }],
    ['👋 Hi 😊', { kind: 'help' }],
    ['hello!!! 🙏🏽', { kind: 'help' }],
    ['Habari...', { kind: 'help' }],
    // new invoice
    ...['new', 'invoice', 'ankara', 'mpya', 'New Invoice', 'ankara mpya'].map(w => [w, { kind: 'new_invoice' }] as const),
    ['Invoice.', { kind: 'new_invoice' }],
    ['ANKARA', { kind: 'new_invoice' }],
    // list
    ...['list', 'invoices', 'orodha', 'ankara zangu', 'Ankara  Zangu', 'my invoices'].map(w => [w, { kind: 'list' }] as const),
    // status / remind / cancel
    ['status 7', { kind: 'status', ref: '7' }],
    ['status inv-0007', { kind: 'status', ref: 'inv-0007' }],
    ['Status INV-0007', { kind: 'status', ref: 'INV-0007' }],
    ['STATUS INV-0007?', { kind: 'status', ref: 'INV-0007' }],
    ['hali 7', { kind: 'status', ref: '7' }],
    ['status', { kind: 'status', ref: '' }],
    ['hali', { kind: 'status', ref: '' }],
    ['status #7', { kind: 'status', ref: '#7' }],
    ['status   inv 7', { kind: 'status', ref: 'inv 7' }],
    ['remind 7', { kind: 'remind', ref: '7' }],
    ['kumbusha INV-0002', { kind: 'remind', ref: 'INV-0002' }],
    ['remind', { kind: 'remind', ref: '' }],
    ['Remind!', { kind: 'remind', ref: '' }],
    ['cancel 7', { kind: 'cancel_invoice', ref: '7' }],
    ['ghairi INV-0007', { kind: 'cancel_invoice', ref: 'INV-0007' }],
    ['Cancel inv-0003.', { kind: 'cancel_invoice', ref: 'inv-0003' }],
    ['cancel', { kind: 'cancel' }],
    ['stop', { kind: 'cancel' }],
    ['ghairi', { kind: 'cancel' }],
    ['acha', { kind: 'cancel' }],
    ['CANCEL!', { kind: 'cancel' }],
    ['Stop.', { kind: 'cancel' }],
    // summary
    ...['summary', 'stats', 'muhtasari', 'takwimu', 'Stats?'].map(w => [w, { kind: 'summary' }] as const),
    // language
    ['language en', { kind: 'language', language: 'en' }],
    ['lugha sw', { kind: 'language', language: 'sw' }],
    ['language swahili', { kind: 'language', language: 'sw' }],
    ['Language English', { kind: 'language', language: 'en' }],
    ['lugha kiingereza', { kind: 'language', language: 'en' }],
    ['lugha Kiswahili', { kind: 'language', language: 'sw' }],
    ['LUGHA SW!', { kind: 'language', language: 'sw' }],
    ['language', { kind: 'language', language: null }],
    ['lugha', { kind: 'language', language: null }],
    ['language fr', { kind: 'language', language: null }],
    ['language en please', { kind: 'language', language: null }],
    // pay
    ['pay', { kind: 'pay', ref: null }],
    ['lipa', { kind: 'pay', ref: null }],
    ['PAY', { kind: 'pay', ref: null }],
    ['Pay!', { kind: 'pay', ref: null }],
    ['pay 7', { kind: 'pay', ref: '7' }],
    ['lipa INV-0007', { kind: 'pay', ref: 'INV-0007' }],
    // yes / no
    ...['yes', 'y', 'ndio', 'ndiyo', 'sawa', 'send', 'tuma', 'ok', 'okay', 'YES!', 'Sawa 👍', 'Ok.'].map(w => [w, { kind: 'yes' }] as const),
    ...['no', 'n', 'hapana', 'la', 'NO', 'Hapana!'].map(w => [w, { kind: 'no' }] as const),
    // dashboard
    ['dashboard', { kind: 'dashboard' }],
    ['Dashboard', { kind: 'dashboard' }],
    // quick invoice
    ['invoice 0712345678 1500 flour', { kind: 'quick_invoice', phone: '0712345678', amount: '1500', description: 'flour' }],
    ['invoice 0712 345 678 1500 flour', { kind: 'quick_invoice', phone: '0712 345 678', amount: '1500', description: 'flour' }],
    ['Invoice +254 712 345 678 KES 1,500 2kg unga', { kind: 'quick_invoice', phone: '+254 712 345 678', amount: 'KES 1,500', description: '2kg unga' }],
    ['ankara 0712345678 1.5k Unga wa ngano', { kind: 'quick_invoice', phone: '0712345678', amount: '1.5k', description: 'Unga wa ngano' }],
    ['invoice 712345678 Ksh1,500 flour', { kind: 'quick_invoice', phone: '712345678', amount: 'Ksh1,500', description: 'flour' }],
    ['invoice 0112 345 678 1500/= cake', { kind: 'quick_invoice', phone: '0112 345 678', amount: '1500/=', description: 'cake' }],
    ['invoice 0712345678 1500 bob flour', { kind: 'quick_invoice', phone: '0712345678', amount: '1500 bob', description: 'flour' }],
    ['invoice 0712345678 Ksh 1500 /= flour', { kind: 'quick_invoice', phone: '0712345678', amount: 'Ksh 1500 /=', description: 'flour' }],
    ['invoice 0712345678 1500 Birthday cake 🎂!', { kind: 'quick_invoice', phone: '0712345678', amount: '1500', description: 'Birthday cake 🎂!' }],
    ['invoice 0712345678 1500 line one\nline two', { kind: 'quick_invoice', phone: '0712345678', amount: '1500', description: 'line one\nline two' }],
    ['invoice 0712345678 1500', { kind: 'quick_invoice', phone: '0712345678', amount: '1500', description: '' }],
    ['invoice 0712345678', { kind: 'quick_invoice', phone: '0712345678', amount: '', description: '' }],
    ['invoice 0712345678 1500.50 flour', { kind: 'quick_invoice', phone: '0712345678', amount: '1500.50', description: 'flour' }],
    ['invoice 0712 345 67 1500 flour', { kind: 'quick_invoice', phone: '0712', amount: '345', description: '67 1500 flour' }],
    // the longest prefix of tokens that is a phone: a lone separator after the number belongs to it
    ['invoice 0712 345 678 - 1500 flour', { kind: 'quick_invoice', phone: '0712 345 678 -', amount: '1500', description: 'flour' }],
    ['invoice john 1500 flour', { kind: 'quick_invoice', phone: 'john', amount: '1500', description: 'flour' }],
    // unknown
    ['', { kind: 'unknown' }],
    ['   ', { kind: 'unknown' }],
    ['😀😀😀', { kind: 'unknown' }],
    ['🇰🇪', { kind: 'unknown' }],
    ['!!!', { kind: 'unknown' }],
    ['?', { kind: 'unknown' }],
    ['help me please', { kind: 'unknown' }],
    ['summary 7', { kind: 'unknown' }],
    ['stop it', { kind: 'unknown' }],
    ['yes please', { kind: 'unknown' }],
    ['asdf', { kind: 'unknown' }],
    ['0712345678', { kind: 'unknown' }],
    ['1500', { kind: 'unknown' }],
    ['invoices 7', { kind: 'unknown' }],
    ['helpful', { kind: 'unknown' }],
    ['payment', { kind: 'unknown' }],
  ];
  for (const [input, expected] of table) {
    test(`${JSON.stringify(input)} -> ${JSON.stringify(expected)}`, () => {
      assert.deepEqual(parseCommand(input), expected);
    });
  }

  const KINDS = new Set<Command['kind']>([
    'help', 'new_invoice', 'quick_invoice', 'list', 'status', 'remind', 'cancel_invoice', 'cancel',
    'summary', 'language', 'pay', 'yes', 'no', 'dashboard', 'unknown',
  ]);

  test('property: never throws on any string and returns a known kind', () => {
    fc.assert(
      fc.property(everyString, s => {
        const c = parseCommand(s);
        assert.ok(KINDS.has(c.kind), c.kind);
      }),
      { numRuns: 3000 },
    );
  });

  test('property: long strings never throw and are handled quickly', () => {
    fc.assert(
      fc.property(longString, s => {
        const started = performance.now();
        const c = parseCommand(s);
        const elapsed = performance.now() - started;
        assert.ok(KINDS.has(c.kind), c.kind);
        assert.ok(elapsed < 2_000, `${elapsed} ms`);
      }),
      { numRuns: 50 },
    );
  });

  test('adversarial 5,000-character inputs: unknown, quickly', () => {
    const inputs = [
      'x'.repeat(5000),
      '😀'.repeat(2500),
      '🇰🇪'.repeat(1250),
      ' '.repeat(4999) + 'x',
      'x' + ' '.repeat(4999),
      '!'.repeat(5000),
      '😀 '.repeat(1666) + 'x',
      '0 '.repeat(2500),
      '1'.repeat(5000),
      'help' + '!x'.repeat(2498),
      '\u200d'.repeat(5000),
      '\ud83d'.repeat(5000), // lone high surrogates
    ];
    for (const input of inputs) {
      const started = performance.now();
      const c = parseCommand(input);
      const elapsed = performance.now() - started;
      assert.deepEqual(c, { kind: 'unknown' }, JSON.stringify(input.slice(0, 10)));
      assert.ok(elapsed < 2_000, `${elapsed} ms for ${JSON.stringify(input.slice(0, 10))}`);
    }
  });

  test('a 5,000-character quick invoice stays a quick invoice and its description is refused as too long', () => {
    const started = performance.now();
    const c = parseCommand(`invoice ${'0 '.repeat(2500)}`);
    assert.ok(performance.now() - started < 2_000);
    assert.equal(c.kind, 'quick_invoice');
    const long = parseCommand(`invoice 0712345678 1500 ${'flour '.repeat(900)}`);
    assert.equal(long.kind, 'quick_invoice');
    if (long.kind !== 'quick_invoice') return;
    assert.deepEqual(parseDescription(long.description), errOf('description_too_long'));
  });

  /** Bare words: any casing, surrounding emoji/whitespace and trailing !?. leave the command unchanged. */
  const BARE_WORDS: ReadonlyArray<readonly [string, Command]> = table.filter(
    ([input, c]) => /^[a-z]+( [a-z]+)?$/.test(input) && c.kind !== 'quick_invoice',
  );
  const randomCase = (s: string, flips: readonly boolean[]): string =>
    [...s].map((ch, i) => (flips[i % Math.max(1, flips.length)] ? ch.toUpperCase() : ch)).join('');
  const decoration = fc.constantFrom('', ' ', '  ', '\n', '😀', '👍🏽 ', ' 🙏', '🇰🇪', '\u00a0');
  const punctuation = fc.constantFrom('', '!', '?', '.', '!!', '?!', '...', '…');

  test('property: casing, emoji around and trailing punctuation do not change a command', () => {
    assert.ok(BARE_WORDS.length > 40);
    fc.assert(
      fc.property(
        fc.constantFrom(...BARE_WORDS),
        fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }),
        decoration,
        punctuation,
        decoration,
        ([word, expected], flips, before, punct, after) => {
          const s = before + randomCase(word, flips) + punct + after;
          assert.deepEqual(parseCommand(s), expected, JSON.stringify(s));
        },
      ),
      { numRuns: 3000 },
    );
  });

  test('property: status / remind / cancel / pay <INV-n> carry a ref that parses back to n', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('status', 'hali', 'remind', 'kumbusha', 'cancel', 'ghairi', 'pay', 'lipa'),
        fc.integer({ min: 1, max: 9999 }),
        fc.constantFrom('', 'INV-', 'inv-', 'inv ', '#'),
        punctuation,
        (word, n, prefix, punct) => {
          const c = parseCommand(`${word} ${prefix}${n}${punct}`);
          const expectedKind = { status: 'status', hali: 'status', remind: 'remind', kumbusha: 'remind', cancel: 'cancel_invoice', ghairi: 'cancel_invoice', pay: 'pay', lipa: 'pay' }[word];
          assert.equal(c.kind, expectedKind);
          assert.ok(c.kind === 'status' || c.kind === 'remind' || c.kind === 'cancel_invoice' || c.kind === 'pay');
          assert.deepEqual(parseInvoiceNumber(c.ref ?? ''), okOf(n));
        },
      ),
      { numRuns: 2000 },
    );
  });

  /**
   * A description whose first word would not be read as part of the amount ('bob', '/=').
   * Emoji and punctuation at the end of a message are trimmed before the words are read, so
   * '/=👍🏽' as the whole description reads as the amount's suffix: excluded too.
   */
  const description = fc
    .oneof(fc.string({ maxLength: 120 }), fc.string({ unit: 'grapheme', maxLength: 60 }), vocabString)
    .filter(d => !/^\s*(?:bob(?![\p{L}\p{N}_])|\/=|\/-)/iu.test(d));

  test('property: invoice <phone> <amount> <description> parses back to the same values', () => {
    let validDescriptions = 0;
    fc.assert(
      fc.property(
        fc.constantFrom('invoice', 'ankara', 'Invoice', 'ANKARA'),
        msisdn,
        fc.constantFrom<(m: Msisdn) => string>(formatPhone, m => m, m => `+${m}`, m => `+254 ${formatPhone(m).slice(1)}`, m => m.slice(3)),
        amountInRange,
        fc.constantFrom<(n: number) => string>(String, formatAmount, n => `Ksh${formatAmount(n).slice(4)}`, n => `${n}/=`, n => `${n} bob`),
        description,
        (word, m, spellPhone, n, spellAmount, desc) => {
          const c = parseCommand(`${word} ${spellPhone(m)} ${spellAmount(n)} ${desc}`);
          assert.equal(c.kind, 'quick_invoice');
          if (c.kind !== 'quick_invoice') return;
          assert.deepEqual(parsePhone(c.phone), okOf(m));
          assert.deepEqual(parseAmount(c.amount), okOf(n));
          assert.deepEqual(parseDescription(c.description), parseDescription(desc));
          if (parseDescription(desc).ok) validDescriptions++;
        },
      ),
      { numRuns: 3000 },
    );
    assert.ok(validDescriptions > 1000, `only ${validDescriptions} valid descriptions: the property was barely exercised`);
  });
});
