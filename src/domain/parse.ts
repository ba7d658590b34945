/**
 * Pure input parsers for what merchants and customers type (docs: CONVERSATION.md
 * "Merchant commands" and "Input the bot understands"; PROVIDERS.md "Kenyan numbers").
 *
 * No I/O, no clock, no randomness. Every parser returns a result instead of throwing,
 * for any string, and does work linear in the input length (bounded where it matters).
 */

/** Normalised Kenyan mobile number: '2547XXXXXXXX' or '2541XXXXXXXX' (12 digits). */
export type Msisdn = string;
export type ParseResult<T, E extends string> = { ok: true; value: T } | { ok: false; error: E };

const ok = <T>(value: T): { ok: true; value: T } => ({ ok: true, value });
const fail = <E extends string>(error: E): { ok: false; error: E } => ({ ok: false, error });

// ---------------------------------------------------------------------------
// Phone numbers
// ---------------------------------------------------------------------------

/** Spaces (any Unicode space), ASCII and Unicode dashes, dots and parentheses. */
const PHONE_SEPARATORS = /[\s\-.()\u2010-\u2015\u2212]/g;
/** 9 national digits of a Kenyan mobile number: 7xx xxx xxx or 1xx xxx xxx. */
const PHONE_FORMS = [/^\+?254([17]\d{8})$/, /^0([17]\d{8})$/, /^([17]\d{8})$/] as const;
/** Longer than any sensible spelling of a phone number: refuse without scanning. */
const PHONE_MAX_INPUT = 40;

/**
 * Accepts 0712345678, 0712 345 678, +254712345678, 254712345678, 712345678 and the
 * same with 01x (spaces, dashes, dots and parentheses are ignored). Anything else,
 * including landlines (2x), other country codes and wrong lengths, is refused.
 */
export function parsePhone(input: string): ParseResult<Msisdn, 'invalid_phone'> {
  if (typeof input !== 'string' || input.length > PHONE_MAX_INPUT) return fail('invalid_phone');
  const compact = input.trim().replace(PHONE_SEPARATORS, '');
  for (const form of PHONE_FORMS) {
    const national = form.exec(compact)?.[1];
    if (national !== undefined) return ok(`254${national}`);
  }
  return fail('invalid_phone');
}

/** '254712345678' -> '0712 345 678'. Anything that is not 12 digits starting 254 is returned as is. */
export function formatPhone(msisdn: Msisdn): string {
  const m = /^254(\d{3})(\d{3})(\d{3})$/.exec(msisdn);
  if (!m) return msisdn;
  return `0${m[1]} ${m[2]} ${m[3]}`;
}

// ---------------------------------------------------------------------------
// Amounts
// ---------------------------------------------------------------------------

export const DEFAULT_MAX_AMOUNT = 250_000;

type AmountError = 'invalid_amount' | 'decimal_amount' | 'amount_too_small' | 'amount_too_large';

/** Currency words before the number: KES, Ksh, Kshs, Sh, Shs (optionally followed by '.'). */
const AMOUNT_PREFIX = /^(?:kshs|ksh|kes|shs|sh)\.?/;
/** Currency marks after the number, longest first. */
const AMOUNT_SUFFIXES = ['kshs', 'ksh', 'kes', 'shs', 'sh', 'bob', '/=', '/-'] as const;
/** Plain digits, or digits grouped by commas in threes; optional decimal part. */
const AMOUNT_NUMBER = /^(\d+|[1-9]\d{0,2}(?:,\d{3})+)(?:\.(\d+))?$/;
/** Mantissa of a 'k' amount ('1.5k'): digits, optional decimal part, no grouping. */
const AMOUNT_THOUSANDS = /^(\d+)(?:\.(\d+))?$/;

/**
 * Whole Kenyan shillings: '1500', '1,500', 'KES 1500', 'Ksh1,500', 'Sh 1500', '1500/=',
 * '1500 bob', '1.5k', '10K'. '1500.00' is 1500; '1500.50' is refused with 'decimal_amount'.
 * 0 and negatives are 'amount_too_small'; above `max` is 'amount_too_large'.
 */
export function parseAmount(input: string, max: number = DEFAULT_MAX_AMOUNT): ParseResult<number, AmountError> {
  if (typeof input !== 'string') return fail('invalid_amount');
  let s = input.trim().toLowerCase();

  const prefix = AMOUNT_PREFIX.exec(s);
  if (prefix) s = s.slice(prefix[0].length).trimStart();
  for (const suffix of AMOUNT_SUFFIXES) {
    if (s.endsWith(suffix)) {
      s = s.slice(0, s.length - suffix.length).trimEnd();
      break;
    }
  }

  let negative = false;
  if (s.startsWith('-') || s.startsWith('\u2212')) {
    negative = true;
    s = s.slice(1).trimStart();
  }

  let whole: bigint;
  let fractionIsZero: boolean;
  if (s.endsWith('k')) {
    const m = AMOUNT_THOUSANDS.exec(s.slice(0, -1).trimEnd());
    if (!m || m[1] === undefined) return fail('invalid_amount');
    const fraction = m[2] ?? '';
    // 1.25k = 1 * 1000 + 250; digits beyond the third decimal are fractions of a shilling.
    whole = BigInt(m[1]) * 1000n + BigInt(fraction.slice(0, 3).padEnd(3, '0'));
    fractionIsZero = /^0*$/.test(fraction.slice(3));
  } else {
    const m = AMOUNT_NUMBER.exec(s);
    if (!m || m[1] === undefined) return fail('invalid_amount');
    whole = BigInt(m[1].replaceAll(',', ''));
    fractionIsZero = /^0*$/.test(m[2] ?? '');
  }

  if (negative) return fail('amount_too_small');
  if (!fractionIsZero) return fail('decimal_amount');
  if (whole < 1n) return fail('amount_too_small');
  if (whole > BigInt(Number.MAX_SAFE_INTEGER)) return fail('amount_too_large');
  const amount = Number(whole);
  if (!(amount <= max)) return fail('amount_too_large');
  return ok(amount);
}

/** 1500 -> 'KES 1,500'. */
export function formatAmount(amount: number): string {
  const [int = '0', frac] = String(amount).split('.');
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `KES ${frac === undefined ? grouped : `${grouped}.${frac}`}`;
}

// ---------------------------------------------------------------------------
// Descriptions
// ---------------------------------------------------------------------------

const MAX_DESCRIPTION_LENGTH = 100;

/**
 * Free text, trimmed, inner runs of whitespace and newlines collapsed to one space;
 * 1-100 characters counted as code points (an emoji is one).
 */
export function parseDescription(input: string): ParseResult<string, 'description_empty' | 'description_too_long'> {
  if (typeof input !== 'string') return fail('description_empty');
  const s = input.replace(/\s+/g, ' ').trim();
  if (s.length === 0) return fail('description_empty');
  // A code point is at most 2 UTF-16 units: only count when the string might be too long.
  if (s.length > MAX_DESCRIPTION_LENGTH && [...s].length > MAX_DESCRIPTION_LENGTH) {
    return fail('description_too_long');
  }
  return ok(s);
}

// ---------------------------------------------------------------------------
// Invoice numbers
// ---------------------------------------------------------------------------

/** INV- and eight digits: the 12 characters an STK push's AccountReference holds. */
const MAX_INVOICE_NUMBER = 99_999_999;
/** '7', '0007', 'inv-0007', 'INV7', 'inv 7', 'invoice 7', '#7', 'inv #7'. */
const INVOICE_NUMBER = /^(?:inv(?:oice)?\s*[-#]?\s*|#\s*)?(\d+)$/;

/**
 * '7', '0007', 'INV-0007', 'inv 7', '#7' -> 7. 1..99,999,999: every number the invoices are
 * given (INV-0001, ... INV-9999, INV-10000, ...).
 */
export function parseInvoiceNumber(input: string): ParseResult<number, 'invalid_invoice_number'> {
  if (typeof input !== 'string' || input.length > 40) return fail('invalid_invoice_number');
  const digits = INVOICE_NUMBER.exec(input.trim().toLowerCase())?.[1];
  if (digits === undefined) return fail('invalid_invoice_number');
  const significant = digits.replace(/^0+/, '');
  // Length first: a long run of digits is out of range without converting it.
  if (significant.length === 0 || significant.length > String(MAX_INVOICE_NUMBER).length) {
    return fail('invalid_invoice_number');
  }
  const n = Number(significant);
  return n <= MAX_INVOICE_NUMBER ? ok(n) : fail('invalid_invoice_number');
}

/** 7 -> 'INV-0007'; 12345 -> 'INV-12345'. */
export function formatInvoiceNumber(n: number): string {
  return `INV-${String(n).padStart(4, '0')}`;
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

export type Command =
  | { kind: 'help' }
  | { kind: 'new_invoice' }
  | { kind: 'quick_invoice'; phone: string; amount: string; description: string }
  | { kind: 'list' }
  | { kind: 'status'; ref: string }
  | { kind: 'remind'; ref: string }
  | { kind: 'cancel_invoice'; ref: string }
  | { kind: 'cancel' }
  | { kind: 'summary' }
  | { kind: 'language'; language: 'en' | 'sw' | null }
  | { kind: 'pay'; ref: string | null }
  | { kind: 'yes' }
  | { kind: 'no' }
  | { kind: 'dashboard' }
  | { kind: 'unknown' };

type BareCommand = Extract<Command, { kind: 'help' | 'new_invoice' | 'list' | 'cancel' | 'summary' | 'yes' | 'no' | 'dashboard' }>;

/** Whole messages (lower case, single spaces) that are a command without arguments. */
const BARE: ReadonlyMap<string, BareCommand> = new Map<string, BareCommand>([
  ...['help', 'msaada', 'menu', 'menyu', 'hi', 'hello', 'habari', 'start'].map(w => [w, { kind: 'help' }] as const),
  ...['new', 'invoice', 'ankara', 'mpya', 'new invoice', 'ankara mpya'].map(w => [w, { kind: 'new_invoice' }] as const),
  ...['list', 'invoices', 'orodha', 'ankara zangu', 'my invoices'].map(w => [w, { kind: 'list' }] as const),
  ...['cancel', 'stop', 'ghairi', 'acha'].map(w => [w, { kind: 'cancel' }] as const),
  ...['summary', 'stats', 'muhtasari', 'takwimu'].map(w => [w, { kind: 'summary' }] as const),
  ...['yes', 'y', 'ndio', 'ndiyo', 'sawa', 'send', 'tuma', 'ok', 'okay'].map(w => [w, { kind: 'yes' }] as const),
  ...['no', 'n', 'hapana', 'la'].map(w => [w, { kind: 'no' }] as const),
  ...['dashboard'].map(w => [w, { kind: 'dashboard' }] as const),
]);

const STATUS_WORDS: ReadonlySet<string> = new Set(['status', 'hali']);
const REMIND_WORDS: ReadonlySet<string> = new Set(['remind', 'kumbusha']);
const CANCEL_WORDS: ReadonlySet<string> = new Set(['cancel', 'ghairi']);
const LANGUAGE_WORDS: ReadonlySet<string> = new Set(['language', 'lugha']);
const PAY_WORDS: ReadonlySet<string> = new Set(['pay', 'lipa']);
const INVOICE_WORDS: ReadonlySet<string> = new Set(['invoice', 'ankara']);

const LANGUAGES: ReadonlyMap<string, 'en' | 'sw'> = new Map([
  ['en', 'en'],
  ['eng', 'en'],
  ['english', 'en'],
  ['kiingereza', 'en'],
  ['sw', 'sw'],
  ['swa', 'sw'],
  ['swahili', 'sw'],
  ['kiswahili', 'sw'],
]);

/** Currency words that may stand as their own token before the amount ('KES 1500'). */
const CURRENCY_TOKEN = /^(?:kshs|ksh|kes|shs|sh)\.?$/i;
/** Currency marks that may stand as their own token after the amount ('1500 bob', '1500 /='). */
const AMOUNT_SUFFIX_TOKEN = /^(?:bob|\/=|\/-)$/i;
/** The phone may be typed in up to this many space-separated pieces ('+254 712 345 678'). */
const MAX_PHONE_TOKENS = 6;

/** Emoji, their modifiers and joiners, and whitespace: ignored around a message. */
const SURROUNDING = /^[\s\p{Extended_Pictographic}\p{Emoji_Modifier}\p{Regional_Indicator}\u{FE0E}\u{FE0F}\u{200D}\u{20E3}\u{E0020}-\u{E007F}]$/u;
/** Also ignored at the end of a message. */
const TRAILING_PUNCTUATION = /^[!?.\u2026]$/u;

interface Token {
  readonly text: string;
  readonly start: number;
  readonly end: number;
}

function tokenize(s: string): Token[] {
  const tokens: Token[] = [];
  for (const m of s.matchAll(/\S+/g)) {
    tokens.push({ text: m[0], start: m.index, end: m.index + m[0].length });
  }
  return tokens;
}

/**
 * The message without surrounding emoji and whitespace: `lead` drops them at the start
 * only; `core` also drops them (and trailing punctuation) at the end. `core` is a prefix
 * of `lead`, so positions in one are valid in the other.
 */
function trimMessage(text: string): { lead: string; core: string } {
  const chars = Array.from(text);
  let start = 0;
  while (start < chars.length && SURROUNDING.test(chars[start] ?? '')) start++;
  let end = chars.length;
  while (end > start) {
    const c = chars[end - 1] ?? '';
    if (!SURROUNDING.test(c) && !TRAILING_PUNCTUATION.test(c)) break;
    end--;
  }
  return { lead: chars.slice(start).join(''), core: chars.slice(start, end).join('') };
}

function quickInvoice(lead: string, args: readonly Token[]): Command {
  // Phone: the longest run of leading tokens that is a valid phone number ('0712 345 678').
  let phoneTokens = 0;
  let joined = '';
  for (let i = 0; i < Math.min(args.length, MAX_PHONE_TOKENS); i++) {
    joined += args[i]?.text ?? '';
    if (joined.length > PHONE_MAX_INPUT) break;
    if (parsePhone(joined).ok) phoneTokens = i + 1;
  }
  // Not a valid phone: the first token stands for it, so the flow can say what is wrong.
  if (phoneTokens === 0) phoneTokens = Math.min(1, args.length);
  const phone = args.slice(0, phoneTokens).map(t => t.text).join(' ');

  // Amount: one token, or a currency word and the number ('KES 1500', '1500 bob').
  let next = phoneTokens;
  const amountTokens: Token[] = [];
  const first = args[next];
  if (first !== undefined) {
    amountTokens.push(first);
    next++;
    const second = args[next];
    if (second !== undefined && CURRENCY_TOKEN.test(first.text)) {
      amountTokens.push(second);
      next++;
    }
    const third = args[next];
    if (third !== undefined && AMOUNT_SUFFIX_TOKEN.test(third.text)) {
      amountTokens.push(third);
      next++;
    }
  }
  const amount = amountTokens.map(t => t.text).join(' ');

  // Description: everything after the amount, as typed (trailing punctuation and emoji kept).
  const descriptionStart = amountTokens.at(-1)?.end ?? args.at(-1)?.end ?? lead.length;
  const description = lead.slice(descriptionStart).trim();
  return { kind: 'quick_invoice', phone, amount, description };
}

/**
 * What a merchant's (or customer's) text message asks for. Case-insensitive; surrounding
 * whitespace and emoji and trailing !?. are ignored. Arguments (refs, phone, amount,
 * description) are returned raw: validate them with the parsers above.
 */
export function parseCommand(text: string): Command {
  if (typeof text !== 'string') return { kind: 'unknown' };
  const { lead, core } = trimMessage(text);
  const tokens = tokenize(core);
  const head = tokens[0];
  if (head === undefined) return { kind: 'unknown' };

  const word = head.text.toLowerCase();
  const args = tokens.slice(1);
  const rest = core.slice(head.end).trim();

  if (args.length <= 1) {
    const bare = BARE.get(tokens.map(t => t.text.toLowerCase()).join(' '));
    if (bare !== undefined) return bare;
  }
  if (STATUS_WORDS.has(word)) return { kind: 'status', ref: rest };
  if (REMIND_WORDS.has(word)) return { kind: 'remind', ref: rest };
  if (CANCEL_WORDS.has(word)) return { kind: 'cancel_invoice', ref: rest };
  if (LANGUAGE_WORDS.has(word)) return { kind: 'language', language: LANGUAGES.get(rest.toLowerCase()) ?? null };
  if (PAY_WORDS.has(word)) return { kind: 'pay', ref: rest === '' ? null : rest };
  if (INVOICE_WORDS.has(word) && args.length > 0) return quickInvoice(lead, args);
  return { kind: 'unknown' };
}
