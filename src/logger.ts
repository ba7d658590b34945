/**
 * The one pino root logger. Lines are JSON with `timestamp` (ISO 8601), `level` (a word)
 * and `message`. Secrets are redacted by key wherever they appear, phone numbers are
 * masked by key and inside free text, so a log line never carries a full MSISDN.
 */
import { pino, type Logger, type DestinationStream, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * Keys whose values are secrets: replaced whole. Keys are compared normalised (lower case,
 * separators removed), so `apiKey`, `api_key` and `API-KEY` are the same key.
 */
const secretKeys = [
  'authorization',
  'proxyauthorization',
  'cookie',
  'setcookie',
  'xhubsignature256',
  'xhubsignature',
  'apikey',
  'password',
  'passkey',
  'secret',
  'token',
  'accesstoken',
  'refreshtoken',
  'clientsecret',
  'consumerkey',
  'consumersecret',
  'appsecret',
  'verifytoken',
  'hubverifytoken',
  'securitycredential',
  'privatekey',
  'callbackurl',
];

/** Any key ending in one of these is a secret too (`wabaToken`, `STATS_API_TOKEN`, `webhookSecret`). */
const secretSuffix = /(token|secret|password|passkey|apikey|credential|credentials)$/;

/** Keys whose values are phone numbers: masked, not removed, so support can still correlate. */
const phoneKeys = ['phone', 'phonenumber', 'msisdn', 'waid', 'from', 'to', 'recipient', 'recipientid', 'partya', 'customerphone', 'merchantphone'];

const secretSet = new Set(secretKeys);
const phoneSet = new Set(phoneKeys);

function normaliseKey(key: string): string {
  return key.toLowerCase().replace(/[^a-z0-9]/g, '');
}

function isSecretKey(key: string): boolean {
  const normalised = normaliseKey(key);
  return secretSet.has(normalised) || secretSuffix.test(normalised);
}

/**
 * Kenyan and other E.164-looking numbers: 9 to 15 digits, optional leading +.
 * A run glued to letters, digits, hyphens or a dot before it is not a phone: that keeps UUIDs
 * (whose last group can be twelve digits), decimals' fractions and other identifiers intact.
 */
const phoneInText = /(?<![\dA-Za-z.-])\+?\d{9,15}(?![\dA-Za-z-])/g;
/** Between the digits of a number as people write it: spaces (no-break too), hyphens, brackets. */
const sep = '[ \\u00a0()-]{0,2}';
/**
 * Kenyan mobile numbers as people write them, grouped any way: `0712 345 678`, `07 12 34 56 78`,
 * `(0712) 345 678`, `+254 (0) 712 345 678`, `+254-0712-345-678`, `+254-712-345-678`. Nine
 * digits from the 7 or 1, after 254, 0 or nothing. Dates, times and amounts do not read so
 * (`2026-12-02`, `10:15`, `3 000 000`); a run glued to letters or hyphens (an id) is left alone.
 */
const groupedKenyanPhone = new RegExp(`(?<![\\dA-Za-z.-])(?:\\+${sep})?(?:2${sep}5${sep}4${sep}(?:\\(?0\\)?${sep})?|\\(?0${sep})?[17](?:${sep}\\d){8}(?![\\dA-Za-z-])`, 'g');
/**
 * Dotted only in three groups of three (`254.712.345.678`, `0712.345.678`): dots between other
 * groups are IP addresses (`172.16.254.1`), versions and decimals.
 */
const dottedKenyanPhone = /(?<![\dA-Za-z.-])(?:\+?254\.|0)?[17]\d{2}\.\d{3}\.\d{3}(?![\dA-Za-z.-])/g;
/**
 * A number after a URL-encoded `+` (`to=%2B254712345678` in a logged URL or form body): the
 * `B` of `%2B` would otherwise glue it to a letter, which phoneInText leaves alone.
 */
const encodedPlusPhone = /%2[Bb](\d{9,15})(?![\dA-Za-z-])/g;
/**
 * Digits of other scripts (Arabic-Indic `٠٧١٢٣٤٥٦٧٨`, Devanagari, full-width, the mathematical
 * `𝟎𝟕𝟏...` of "fancy text"), as a person may type them: a run of 9 to 15 decimal digits of any
 * script, with the same boundaries as above. Only looked for when the text holds a character
 * beyond ASCII.
 */
const anyScriptDigit = /[^\x00-\x7f]/;
const anyScriptPhone = /(?<![\p{L}\p{Nd}.-])\+?\p{Nd}{9,15}(?![\p{L}\p{Nd}-])/gu;
/** A Kenyan MSISDN held as a number (Daraja's callback items carry `PhoneNumber` so): 254 and nine digits. */
const kenyanMsisdn = /^254\d{9}$/;

/**
 * Keeps the last three digits and those before the last eight, so five are always hidden:
 * `254712345678` -> `2547****678`, `0712345678` -> `07****678`, `712345678` -> `7****678`
 * (the same subscriber digits shown whatever the form). Short values are masked whole.
 */
export function maskPhone(value: string): string {
  // By characters, not UTF-16 units: a digit of another script may take two (`𝟎`).
  const digits = Array.from(value.replace(/^\+/, ''));
  if (digits.length < 8) return '****';
  return `${value.startsWith('+') ? '+' : ''}${digits.slice(0, digits.length - 8).join('')}****${digits.slice(-3).join('')}`;
}

/** Masks every phone-looking run of digits inside a free-text string. */
export function maskPhonesInText(text: string): string {
  // Its digits, without the trunk 0 some write after 254 (`+254 (0) 712...`).
  const digitsOf = (match: string) => maskPhone(match.replace(/[^\d+]/g, '').replace(/^(\+?254)0(?=[17])/, '$1'));
  const masked = text
    .replace(groupedKenyanPhone, digitsOf)
    .replace(dottedKenyanPhone, digitsOf)
    .replace(phoneInText, (match) => maskPhone(match))
    .replace(encodedPlusPhone, (_match, digits: string) => `%2B${maskPhone(digits)}`);
  return anyScriptDigit.test(masked) ? masked.replace(anyScriptPhone, (match) => maskPhone(match)) : masked;
}

/**
 * Walks a log object and returns a copy with secrets redacted and phones masked.
 * Depth-limited so a cyclic or huge object cannot stall logging.
 */
export function scrub(value: unknown, depth = 0): unknown {
  if (depth > 8) return '[Truncated]';
  if (typeof value === 'string') return maskPhonesInText(value);
  // Under any key: a phone number held as a number (other numbers, timestamps included, stay).
  if (typeof value === 'number' && Number.isInteger(value) && kenyanMsisdn.test(String(value))) return maskPhone(String(value));
  if (Array.isArray(value)) return value.map((item) => scrub(item, depth + 1));
  if (value instanceof Error) {
    return { type: value.name, message: maskPhonesInText(value.message), stack: value.stack === undefined ? undefined : maskPhonesInText(value.stack) };
  }
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, inner] of Object.entries(value)) {
      if (isSecretKey(key)) {
        out[key] = '[REDACTED]';
      } else if (phoneSet.has(normaliseKey(key)) && (typeof inner === 'string' || typeof inner === 'number')) {
        out[key] = maskPhone(String(inner));
      } else {
        out[key] = scrub(inner, depth + 1);
      }
    }
    return out;
  }
  return value;
}

export type LoggerSettings = {
  level: string;
  format: 'json' | 'pretty';
};

export function createLogger(settings: LoggerSettings, destination?: DestinationStream): Logger {
  const options: LoggerOptions = {
    level: settings.level,
    messageKey: 'message',
    errorKey: 'error',
    base: undefined,
    timestamp: () => `,"timestamp":"${new Date().toISOString()}"`,
    formatters: {
      level: (label) => ({ level: label }),
      log: (object) => scrub(object) as Record<string, unknown>,
    },
    serializers: {
      error: (err: unknown) => scrub(err),
      err: (err: unknown) => scrub(err),
    },
    hooks: {
      // formatters.log only sees the merging object: mask the message text, the values
      // interpolated into it, and (pino's `logger.error(err)` form) the error's message,
      // which pino would otherwise copy into `message` unmasked.
      logMethod(args, method) {
        const masked: unknown[] = args.map((arg, index) => {
          if (typeof arg === 'string') return maskPhonesInText(arg);
          return index === 0 ? arg : scrub(arg);
        });
        const [first] = masked;
        if (first instanceof Error && typeof masked[1] !== 'string') masked.splice(1, 0, maskPhonesInText(first.message));
        return method.apply(this, masked as Parameters<typeof method>);
      },
    },
  };
  if (destination !== undefined) return withScrubbedBindings(pino(options, destination));
  if (settings.format === 'pretty') {
    return withScrubbedBindings(
      pino({
        ...options,
        transport: { target: 'pino-pretty', options: { messageKey: 'message', timestampKey: 'timestamp', colorize: true } },
      }),
    );
  }
  return withScrubbedBindings(pino(options));
}

/**
 * pino writes child bindings as they are (formatters.log never sees them, and
 * formatters.bindings is not applied to children): scrub them on the way in. Children are
 * created with Object.create(parent), so they inherit this `child` and `this` is the child.
 */
function withScrubbedBindings(logger: Logger): Logger {
  const pinoChild = logger.child;
  const child = function (this: Logger, bindings: Record<string, unknown>, options?: Parameters<Logger['child']>[1]) {
    return pinoChild.call(this, scrub(bindings) as Record<string, unknown>, options);
  };
  logger.child = child as Logger['child'];
  return logger;
}
