/**
 * The pure delivery rules (src/domain/delivery.ts) and the outbound content schemas
 * (src/domain/outbound.ts), table-driven. No I/O, no clock: every input is explicit.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { OutboundStatus } from '../src/db/schema.js';
import {
  RETRY_CAP_SECONDS,
  WINDOW_MS,
  afterSmsFailure,
  afterWhatsAppFailure,
  backoffSeconds,
  chooseRoute,
  combineStatus,
  insideWindow,
  isSmsAccountProblem,
  retryDelaySeconds,
  type FailureDecision,
  type FailureFacts,
  type Route,
} from '../src/domain/delivery.js';
import {
  ButtonsContent,
  ListContent,
  MessageContent,
  OutboundPayload,
  TextContent,
  smsText,
  truncate,
  type OutboundKind,
  type TemplateKind,
} from '../src/domain/outbound.js';

const NOW = new Date('2025-03-01T12:00:00.000Z');
const ago = (ms: number): Date => new Date(NOW.getTime() - ms);
const HOUR = 60 * 60 * 1000;

const allTemplates: Readonly<Record<TemplateKind, string | undefined>> = {
  invoice: 'invoice_issued_v1',
  receipt: 'payment_received_v1',
  reminder: 'payment_reminder_v1',
};
const noTemplates: Readonly<Record<TemplateKind, string | undefined>> = { invoice: undefined, receipt: undefined, reminder: undefined };
/**
 * A templates record that also (wrongly) names templates for 'reply' and 'notice': the rule
 * must still never route those kinds to a template. Passed through a variable so TypeScript's
 * excess-property check does not refuse the extra keys.
 */
const templatesWithStrayKinds = { ...allTemplates, reply: 'reply_template_v1', notice: 'notice_template_v1' };

const allKinds: readonly OutboundKind[] = ['reply', 'invoice', 'receipt', 'reminder', 'notice'];
const templateKinds: readonly TemplateKind[] = ['invoice', 'receipt', 'reminder'];

describe('chooseRoute', () => {
  type Case = {
    name: string;
    kind: OutboundKind;
    channel: 'whatsapp' | 'sms' | null;
    lastInboundAt: Date | null;
    templates: Readonly<Record<TemplateKind, string | undefined>>;
    hasTemplateParameters: boolean;
    expected: Route;
  };

  const cases: Case[] = [
    // Inside the window: free-form, whatever the kind, whether or not a template exists.
    ...allKinds.flatMap((kind): Case[] => [
      { name: `${kind} inside the window (1 h ago) -> freeform`, kind, channel: null, lastInboundAt: ago(HOUR), templates: allTemplates, hasTemplateParameters: true, expected: { channel: 'whatsapp', mode: 'freeform' } },
      { name: `${kind} inside the window without templates -> freeform`, kind, channel: null, lastInboundAt: ago(HOUR), templates: noTemplates, hasTemplateParameters: false, expected: { channel: 'whatsapp', mode: 'freeform' } },
      { name: `${kind} inside the window on channel whatsapp -> freeform`, kind, channel: 'whatsapp', lastInboundAt: ago(HOUR), templates: allTemplates, hasTemplateParameters: true, expected: { channel: 'whatsapp', mode: 'freeform' } },
    ]),
    // Outside the window with a configured template and its parameters: the template.
    ...templateKinds.map((kind): Case => ({
      name: `${kind} outside the window with template and parameters -> template`,
      kind,
      channel: null,
      lastInboundAt: ago(30 * HOUR),
      templates: allTemplates,
      hasTemplateParameters: true,
      expected: { channel: 'whatsapp', mode: 'template', templateName: allTemplates[kind] ?? '' },
    })),
    ...templateKinds.map((kind): Case => ({
      name: `${kind} never messaged (lastInboundAt null) with template and parameters -> template`,
      kind,
      channel: null,
      lastInboundAt: null,
      templates: allTemplates,
      hasTemplateParameters: true,
      expected: { channel: 'whatsapp', mode: 'template', templateName: allTemplates[kind] ?? '' },
    })),
    // Outside the window without a template, or without parameters: SMS.
    ...templateKinds.flatMap((kind): Case[] => [
      { name: `${kind} outside the window, no template configured -> sms`, kind, channel: null, lastInboundAt: ago(30 * HOUR), templates: noTemplates, hasTemplateParameters: true, expected: { channel: 'sms', reason: 'outside_window_no_template' } },
      { name: `${kind} outside the window, template but no parameters -> sms`, kind, channel: null, lastInboundAt: ago(30 * HOUR), templates: allTemplates, hasTemplateParameters: false, expected: { channel: 'sms', reason: 'outside_window_no_template' } },
      { name: `${kind} never messaged, no template -> sms`, kind, channel: null, lastInboundAt: null, templates: noTemplates, hasTemplateParameters: false, expected: { channel: 'sms', reason: 'outside_window_no_template' } },
    ]),
    // 'reply' and 'notice' never use templates, even when a name is (wrongly) configured for them.
    ...(['reply', 'notice'] as const).flatMap((kind): Case[] => [
      { name: `${kind} outside the window with templates and parameters -> sms`, kind, channel: null, lastInboundAt: ago(30 * HOUR), templates: allTemplates, hasTemplateParameters: true, expected: { channel: 'sms', reason: 'outside_window_no_template' } },
      { name: `${kind} outside the window with a stray template for its own kind -> sms`, kind, channel: null, lastInboundAt: ago(30 * HOUR), templates: templatesWithStrayKinds, hasTemplateParameters: true, expected: { channel: 'sms', reason: 'outside_window_no_template' } },
      { name: `${kind} never messaged with a stray template -> sms`, kind, channel: null, lastInboundAt: null, templates: templatesWithStrayKinds, hasTemplateParameters: true, expected: { channel: 'sms', reason: 'outside_window_no_template' } },
    ]),
    // Channel already 'sms' (fell back earlier): stays on SMS, even inside the window.
    ...allKinds.flatMap((kind): Case[] => [
      { name: `${kind} on channel sms, inside the window -> sms fell_back`, kind, channel: 'sms', lastInboundAt: ago(HOUR), templates: allTemplates, hasTemplateParameters: true, expected: { channel: 'sms', reason: 'fell_back' } },
      { name: `${kind} on channel sms, outside the window -> sms fell_back`, kind, channel: 'sms', lastInboundAt: ago(30 * HOUR), templates: allTemplates, hasTemplateParameters: true, expected: { channel: 'sms', reason: 'fell_back' } },
    ]),
    // Window edges.
    { name: 'just inside WINDOW_MS (1 ms before the edge) -> freeform', kind: 'invoice', channel: null, lastInboundAt: ago(WINDOW_MS - 1), templates: allTemplates, hasTemplateParameters: true, expected: { channel: 'whatsapp', mode: 'freeform' } },
    { name: 'exactly WINDOW_MS -> outside: template', kind: 'invoice', channel: null, lastInboundAt: ago(WINDOW_MS), templates: allTemplates, hasTemplateParameters: true, expected: { channel: 'whatsapp', mode: 'template', templateName: 'invoice_issued_v1' } },
    { name: 'just outside WINDOW_MS (1 ms past the edge) -> template', kind: 'invoice', channel: null, lastInboundAt: ago(WINDOW_MS + 1), templates: allTemplates, hasTemplateParameters: true, expected: { channel: 'whatsapp', mode: 'template', templateName: 'invoice_issued_v1' } },
    { name: 'reply just inside WINDOW_MS -> freeform', kind: 'reply', channel: null, lastInboundAt: ago(WINDOW_MS - 1), templates: allTemplates, hasTemplateParameters: false, expected: { channel: 'whatsapp', mode: 'freeform' } },
    { name: 'reply just outside WINDOW_MS -> sms', kind: 'reply', channel: null, lastInboundAt: ago(WINDOW_MS + 1), templates: allTemplates, hasTemplateParameters: false, expected: { channel: 'sms', reason: 'outside_window_no_template' } },
    { name: 'between WINDOW_MS and Meta\'s 24 h (the safety margin) -> outside', kind: 'receipt', channel: null, lastInboundAt: ago(24 * HOUR - 60_000), templates: noTemplates, hasTemplateParameters: false, expected: { channel: 'sms', reason: 'outside_window_no_template' } },
  ];

  for (const c of cases) {
    test(c.name, () => {
      const route = chooseRoute({
        kind: c.kind,
        channel: c.channel,
        lastInboundAt: c.lastInboundAt,
        now: NOW,
        templates: c.templates,
        hasTemplateParameters: c.hasTemplateParameters,
      });
      assert.deepEqual(route, c.expected);
    });
  }

  test('WINDOW_MS keeps a margin under Meta\'s 24 hours', () => {
    assert.ok(WINDOW_MS < 24 * HOUR);
    assert.ok(WINDOW_MS >= 23 * HOUR);
  });

  test('insideWindow: null is outside; the edge is exclusive', () => {
    assert.equal(insideWindow(null, NOW), false);
    assert.equal(insideWindow(ago(0), NOW), true);
    assert.equal(insideWindow(ago(WINDOW_MS - 1), NOW), true);
    assert.equal(insideWindow(ago(WINDOW_MS), NOW), false);
    assert.equal(insideWindow(ago(WINDOW_MS + 1), NOW), false);
  });
});

describe('backoffSeconds', () => {
  const ceilingFor = (attempt: number, base = 2, cap = 300): number => Math.min(cap, base * 2 ** Math.max(0, attempt - 1));

  test('grows exponentially with the attempt (lowest jitter = half the ceiling)', () => {
    const table: Array<[attempt: number, expected: number]> = [
      [1, 1],
      [2, 2],
      [3, 4],
      [4, 8],
      [5, 16],
      [6, 32],
      [7, 64],
      [8, 128],
      [9, 150], // ceiling capped at 300
      [10, 150],
    ];
    for (const [attempt, expected] of table) {
      assert.equal(backoffSeconds(attempt, 0), expected, `attempt ${attempt}`);
    }
  });

  test('highest jitter reaches (at most) the ceiling, capped at 300 s', () => {
    const table: Array<[attempt: number, expected: number]> = [
      [1, 2],
      [2, 4],
      [3, 8],
      [5, 32],
      [8, 256],
      [9, 300],
      [50, 300],
      [2000, 300], // 2 ** 1999 is Infinity: still capped
    ];
    for (const [attempt, expected] of table) {
      assert.equal(backoffSeconds(attempt, 0.999_999), expected, `attempt ${attempt}`);
    }
  });

  test('attempt 0 and negative attempts count as the first', () => {
    assert.equal(backoffSeconds(0, 0), 1);
    assert.equal(backoffSeconds(-3, 0), 1);
    assert.equal(backoffSeconds(0, 0.999_999), 2);
  });

  test('jitter comes from `random`: the same random gives the same delay, a larger one a longer delay', () => {
    assert.equal(backoffSeconds(4, 0.5), 12); // ceiling 16: 16 / 2 + 0.5 * 16 / 2
    assert.equal(backoffSeconds(4, 0.5), backoffSeconds(4, 0.5));
    assert.equal(backoffSeconds(4, 0.25), 10);
    assert.equal(backoffSeconds(4, 0.75), 14);
    assert.ok(backoffSeconds(6, 0.1) < backoffSeconds(6, 0.9));
  });

  test('stays within [ceiling/2, ceiling] for every attempt and random', () => {
    const randoms = [0, 0.01, 0.1, 0.25, 0.333, 0.5, 0.75, 0.9, 0.99, 0.999_999];
    for (const [base, cap] of [[2, 300], [2, 600], [1, 60], [5, 1000]] as const) {
      for (let attempt = 0; attempt <= 25; attempt += 1) {
        const ceiling = ceilingFor(attempt, base, cap);
        for (const random of randoms) {
          const delay = backoffSeconds(attempt, random, base, cap);
          assert.ok(delay >= ceiling / 2 && delay <= ceiling, `attempt ${attempt} random ${random} base ${base} cap ${cap}: ${delay} not in [${ceiling / 2}, ${ceiling}]`);
          assert.ok(delay <= cap, `capped at ${cap}`);
        }
      }
    }
  });

  test('honours custom base and cap', () => {
    assert.equal(backoffSeconds(1, 0, 10, 1000), 5);
    assert.equal(backoffSeconds(3, 0, 10, 1000), 20);
    assert.equal(backoffSeconds(20, 0, 10, 1000), 500);
    assert.equal(backoffSeconds(20, 0.999_999, 10, 1000), 1000);
    assert.equal(backoffSeconds(12, 0, 2, 600), 300);
  });

  test('rounds to a tenth of a second', () => {
    for (const random of [0.123_456, 0.777_777, 0.314_159]) {
      const delay = backoffSeconds(3, random);
      assert.equal(Math.round(delay * 10) / 10, delay);
    }
  });
});

describe('afterWhatsAppFailure', () => {
  const facts = (retryable: boolean, code?: string, retryAfterSeconds?: number): FailureFacts => ({ retryable, code, retryAfterSeconds });

  const cases: Array<{ name: string; error: FailureFacts; attempt: number; max: number; random: number; expected: FailureDecision }> = [
    { name: 'retryable 500, attempts left -> retry after the backoff', error: facts(true), attempt: 1, max: 5, random: 0, expected: { action: 'retry', delaySeconds: 1 } },
    { name: 'retryable, third attempt -> backoff grows', error: facts(true, '131000'), attempt: 3, max: 5, random: 0, expected: { action: 'retry', delaySeconds: 4 } },
    { name: 'retryable 130429 with retry-after 7 > backoff -> waits 7 s (random 0)', error: facts(true, '130429', 7), attempt: 1, max: 5, random: 0, expected: { action: 'retry', delaySeconds: 7 } },
    { name: 'retry-after 7 > backoff, random 0.5 -> spread to 8.8 s', error: facts(true, '130429', 7), attempt: 1, max: 5, random: 0.5, expected: { action: 'retry', delaySeconds: 8.8 } },
    { name: 'retry-after shorter than the backoff -> the backoff wins', error: facts(true, '130429', 1), attempt: 5, max: 8, random: 0, expected: { action: 'retry', delaySeconds: 16 } },
    { name: 'retry-after 0 -> the backoff', error: facts(true, '131056', 0), attempt: 2, max: 5, random: 0, expected: { action: 'retry', delaySeconds: 2 } },
    { name: 'retryable, one attempt before the last -> retry', error: facts(true), attempt: 4, max: 5, random: 0, expected: { action: 'retry', delaySeconds: 8 } },
    { name: 'retryable, last attempt used -> fallback whatsapp_retries_exhausted', error: facts(true, '131000'), attempt: 5, max: 5, random: 0, expected: { action: 'fallback', reason: 'whatsapp_retries_exhausted' } },
    { name: 'retryable, past the max -> fallback whatsapp_retries_exhausted', error: facts(true), attempt: 9, max: 5, random: 0, expected: { action: 'fallback', reason: 'whatsapp_retries_exhausted' } },
    { name: 'retryable with maxAttempts 1 -> fallback at once', error: facts(true, '130429', 30), attempt: 1, max: 1, random: 0, expected: { action: 'fallback', reason: 'whatsapp_retries_exhausted' } },
    ...(['131026', '131047', '131048', '131049'] as const).map((code) => ({
      name: `non-retryable ${code} on the first attempt -> fallback at once`,
      error: facts(false, code),
      attempt: 1,
      max: 5,
      random: 0,
      expected: { action: 'fallback', reason: `whatsapp_error_${code}` } as FailureDecision,
    })),
    { name: 'non-retryable with a retry-after still falls back', error: facts(false, '131047', 60), attempt: 1, max: 5, random: 0, expected: { action: 'fallback', reason: 'whatsapp_error_131047' } },
    { name: 'non-retryable without a code (e.g. not configured) -> fallback whatsapp_error_unknown', error: facts(false), attempt: 1, max: 5, random: 0, expected: { action: 'fallback', reason: 'whatsapp_error_unknown' } },
    // Retry-After is capped at RETRY_CAP_SECONDS (300 s, the backoff's cap): found in review.
    { name: 'retry-after 250 (between backoff and cap), random 0 -> waits 250 s', error: facts(true, '130429', 250), attempt: 1, max: 5, random: 0, expected: { action: 'retry', delaySeconds: 250 } },
    { name: 'retry-after 250, random 0.5 -> spread to 275 s, within the cap', error: facts(true, '130429', 250), attempt: 1, max: 5, random: 0.5, expected: { action: 'retry', delaySeconds: 275 } },
    { name: 'retry-after 250, random near 1 -> the cap, not 375 s', error: facts(true, '130429', 250), attempt: 1, max: 5, random: 0.999_999, expected: { action: 'retry', delaySeconds: 300 } },
    { name: 'retry-after 150, random near 1 -> 225 s (half again fits under the cap)', error: facts(true, '130429', 150), attempt: 1, max: 5, random: 0.999_999, expected: { action: 'retry', delaySeconds: 225 } },
    { name: 'retry-after exactly the cap -> waits the cap', error: facts(true, '130429', 300), attempt: 2, max: 5, random: 0.7, expected: { action: 'retry', delaySeconds: 300 } },
    { name: 'retry-after 301 (just over the cap) -> SMS at once, whatsapp_rate_limited', error: facts(true, '130429', 301), attempt: 1, max: 5, random: 0, expected: { action: 'fallback', reason: 'whatsapp_rate_limited' } },
    { name: 'retry-after 86400 (a day) -> SMS at once, not hours later', error: facts(true, '131056', 86_400), attempt: 2, max: 5, random: 0.5, expected: { action: 'fallback', reason: 'whatsapp_rate_limited' } },
    { name: 'retry-after absurd (MAX_SAFE_INTEGER) -> SMS at once', error: facts(true, '130429', Number.MAX_SAFE_INTEGER), attempt: 1, max: 5, random: 0, expected: { action: 'fallback', reason: 'whatsapp_rate_limited' } },
    { name: 'retry-after Infinity -> SMS at once', error: facts(true, '130429', Number.POSITIVE_INFINITY), attempt: 1, max: 5, random: 0, expected: { action: 'fallback', reason: 'whatsapp_rate_limited' } },
    { name: 'retry-after over the cap on the last attempt -> whatsapp_retries_exhausted (attempts decide first)', error: facts(true, '130429', 86_400), attempt: 5, max: 5, random: 0, expected: { action: 'fallback', reason: 'whatsapp_retries_exhausted' } },
    { name: 'non-retryable with a retry-after over the cap -> its own error', error: facts(false, '131047', 86_400), attempt: 1, max: 5, random: 0, expected: { action: 'fallback', reason: 'whatsapp_error_131047' } },
    { name: 'retry-after undefined -> the backoff', error: facts(true, '130429', undefined), attempt: 3, max: 5, random: 0, expected: { action: 'retry', delaySeconds: 4 } },
    { name: 'retry-after negative -> the backoff', error: facts(true, '130429', -600), attempt: 3, max: 5, random: 0, expected: { action: 'retry', delaySeconds: 4 } },
    { name: 'retry-after NaN -> the backoff', error: facts(true, '130429', Number.NaN), attempt: 3, max: 5, random: 0, expected: { action: 'retry', delaySeconds: 4 } },
  ];

  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(afterWhatsAppFailure(c.error, c.attempt, c.max, c.random), c.expected);
    });
  }

  test('a burst limited with the same Retry-After does not retry in the same second (found in review)', () => {
    const delays = [0, 0.25, 0.5, 0.75, 0.999].map((random) => afterWhatsAppFailure(facts(true, '130429', 120), 1, 5, random));
    const seconds = delays.map((d) => (d.action === 'retry' ? d.delaySeconds : Number.NaN));
    assert.ok(seconds.every((x) => x >= 120 && x <= 180), seconds.join(', '));
    assert.equal(new Set(seconds.map(Math.floor)).size, 5, `spread: ${seconds.join(', ')}`);
    const sms = [0, 0.999].map((random) => afterSmsFailure(facts(true, '500', 60), 1, 5, random));
    assert.notDeepEqual(sms[0], sms[1]);
  });

  test('a burst limited with a Retry-After near the cap still spreads, and stays within it (found in review)', () => {
    const seconds = [0, 0.25, 0.5, 0.75, 0.999].map((random) => {
      const d = afterWhatsAppFailure(facts(true, '130429', 240), 1, 5, random);
      return d.action === 'retry' ? d.delaySeconds : Number.NaN;
    });
    assert.ok(seconds.every((x) => x >= 240 && x <= RETRY_CAP_SECONDS), seconds.join(', '));
    assert.equal(new Set(seconds.map(Math.floor)).size, 5, `spread: ${seconds.join(', ')}`);
  });

  test('every retry waits at most the cap, never before a Retry-After it honours, never NaN or negative', () => {
    const retryAfters = [undefined, 0, -1, -86_400, Number.NaN, Number.NEGATIVE_INFINITY, 0.5, 1, 7, 30, 64, 120, 199, 200, 201, 250, 299, 299.99, 300];
    for (const retryAfter of retryAfters) {
      for (let attempt = 1; attempt <= 12; attempt += 1) {
        for (const random of [0, 0.01, 0.333, 0.5, 0.9, 0.999_999]) {
          const decision = afterWhatsAppFailure(facts(true, '130429', retryAfter), attempt, 20, random);
          const where = `retry-after ${retryAfter} attempt ${attempt} random ${random}`;
          assert.equal(decision.action, 'retry', where);
          const delay = decision.action === 'retry' ? decision.delaySeconds : Number.NaN;
          const backoff = backoffSeconds(attempt, random);
          assert.ok(delay <= RETRY_CAP_SECONDS, `${where}: ${delay} over the cap`);
          assert.ok(delay >= backoff, `${where}: ${delay} under the backoff ${backoff}`);
          if (retryAfter !== undefined && retryAfter > backoff) {
            assert.ok(delay >= retryAfter && delay <= Math.min(1.5 * retryAfter, RETRY_CAP_SECONDS), `${where}: ${delay} not in [${retryAfter}, min(1.5x, cap)]`);
          }
        }
      }
    }
  });

  test('the retry delay uses `random` for its jitter', () => {
    const low = afterWhatsAppFailure(facts(true), 6, 10, 0);
    const high = afterWhatsAppFailure(facts(true), 6, 10, 0.999_999);
    assert.deepEqual(low, { action: 'retry', delaySeconds: 32 });
    assert.deepEqual(high, { action: 'retry', delaySeconds: 64 });
  });
});

describe('retryDelaySeconds (Retry-After capped at RETRY_CAP_SECONDS, found in review)', () => {
  test('the cap is the backoff\'s cap', () => {
    assert.equal(RETRY_CAP_SECONDS, 300);
    assert.equal(backoffSeconds(30, 0.999_999), RETRY_CAP_SECONDS);
  });

  const cases: Array<{ name: string; retryAfter: number | undefined; attempt: number; random: number; expected: number }> = [
    { name: 'below the backoff -> the backoff', retryAfter: 3, attempt: 4, random: 0.5, expected: 12 },
    { name: 'undefined -> the backoff', retryAfter: undefined, attempt: 4, random: 0.5, expected: 12 },
    { name: '0 -> the backoff', retryAfter: 0, attempt: 4, random: 0.5, expected: 12 },
    { name: 'between backoff and cap -> honoured, spread up to half again', retryAfter: 100, attempt: 1, random: 0.5, expected: 125 },
    { name: 'between backoff and cap, spread clipped at the cap', retryAfter: 280, attempt: 1, random: 0.5, expected: 290 },
    { name: 'between backoff and cap, random near 1 -> at most the cap', retryAfter: 280, attempt: 1, random: 0.999_999, expected: 300 },
    { name: 'far above the cap -> within [cap / 1.5, cap], random 0', retryAfter: 86_400, attempt: 1, random: 0, expected: 200 },
    { name: 'far above the cap, random 0.5', retryAfter: 86_400, attempt: 1, random: 0.5, expected: 250 },
    // Backoff 285 (ceiling 300, random 0.9): the wait is within [285, 300], at 0.9 of it.
    { name: 'far above the cap, a late attempt: never under its backoff', retryAfter: 86_400, attempt: 12, random: 0.9, expected: 298.5 },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.equal(retryDelaySeconds(c.retryAfter, c.attempt, c.random), c.expected);
    });
  }

  test('a custom cap bounds the Retry-After too', () => {
    assert.equal(retryDelaySeconds(50, 1, 0.999_999, 60), 60);
    assert.equal(retryDelaySeconds(1_000, 1, 0, 60), 40);
  });
});

describe('afterSmsFailure', () => {
  const facts = (retryable: boolean, code?: string, retryAfterSeconds?: number): FailureFacts => ({ retryable, code, retryAfterSeconds });

  const cases: Array<{ name: string; error: FailureFacts; attempt: number; max: number; random: number; expected: FailureDecision }> = [
    { name: 'gateway 500, attempts left -> retry', error: facts(true, '500'), attempt: 1, max: 5, random: 0, expected: { action: 'retry', delaySeconds: 1 } },
    { name: 'timeout, third attempt -> retry with a longer backoff', error: facts(true), attempt: 3, max: 5, random: 0.5, expected: { action: 'retry', delaySeconds: 6 } },
    { name: 'retry-after beats a shorter backoff', error: facts(true, '502', 40), attempt: 2, max: 5, random: 0, expected: { action: 'retry', delaySeconds: 40 } },
    { name: 'retryable, attempts used up -> fail', error: facts(true, '502'), attempt: 5, max: 5, random: 0, expected: { action: 'fail', reason: 'sms_error_502' } },
    { name: 'retryable without a code, exhausted -> fail sms_error_unknown', error: facts(true), attempt: 6, max: 5, random: 0, expected: { action: 'fail', reason: 'sms_error_unknown' } },
    { name: '403 invalid number -> fail at once', error: facts(false, '403'), attempt: 1, max: 5, random: 0, expected: { action: 'fail', reason: 'sms_error_403' } },
    { name: '405 insufficient balance -> fail at once (waiting would hold the person\'s later messages)', error: facts(false, '405'), attempt: 1, max: 5, random: 0, expected: { action: 'fail', reason: 'sms_error_405' } },
    { name: '406 blacklisted -> fail at once', error: facts(false, '406'), attempt: 2, max: 5, random: 0, expected: { action: 'fail', reason: 'sms_error_406' } },
    { name: 'not configured (no code) -> fail sms_error_unknown', error: facts(false), attempt: 1, max: 5, random: 0, expected: { action: 'fail', reason: 'sms_error_unknown' } },
  ];

  test('the account\'s problems are told apart from the person\'s: 401, 402, 405 and HTTP 401; not 403, 406, 500 or HTTP 403', () => {
    for (const code of ['401', '402', '405']) assert.equal(isSmsAccountProblem(facts(false, code)), true, code);
    assert.equal(isSmsAccountProblem({ ...facts(false), httpStatus: 401 }), true);
    for (const code of ['403', '406', '500', undefined]) assert.equal(isSmsAccountProblem(facts(false, code)), false, String(code));
    assert.equal(isSmsAccountProblem({ ...facts(false), httpStatus: 403 }), false);
  });

  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(afterSmsFailure(c.error, c.attempt, c.max, c.random), c.expected);
    });
  }

  test('a Retry-After over the cap (found in review): SMS cannot fall back, so it waits within [200, 300] s, spread', () => {
    for (const retryAfter of [301, 3_600, 86_400, Number.MAX_SAFE_INTEGER, Number.POSITIVE_INFINITY]) {
      const seconds = [0, 0.25, 0.5, 0.75, 0.999].map((random) => {
        const d = afterSmsFailure(facts(true, '500', retryAfter), 1, 5, random);
        return d.action === 'retry' ? d.delaySeconds : Number.NaN;
      });
      assert.ok(seconds.every((x) => x >= RETRY_CAP_SECONDS / 1.5 && x <= RETRY_CAP_SECONDS), `${retryAfter}: ${seconds.join(', ')}`);
      assert.equal(new Set(seconds.map(Math.floor)).size, 5, `spread: ${seconds.join(', ')}`);
    }
  });

  test('SMS failures never fall back (there is nowhere left to go)', () => {
    for (const retryable of [true, false]) {
      for (let attempt = 1; attempt <= 6; attempt += 1) {
        const decision = afterSmsFailure(facts(retryable, '500'), attempt, 5, 0.3);
        assert.notEqual(decision.action, 'fallback');
      }
    }
  });
});


describe('combineStatus', () => {
  type Reported = 'sent' | 'delivered' | 'read' | 'failed';
  // Every (current, reported) pair: the new status, or null for "no change".
  const table: Record<OutboundStatus, Record<Reported, OutboundStatus | null>> = {
    queued: { sent: 'sent', delivered: 'delivered', read: 'read', failed: 'failed' },
    sending: { sent: 'sent', delivered: 'delivered', read: 'read', failed: 'failed' },
    sent: { sent: null, delivered: 'delivered', read: 'read', failed: 'failed' },
    // A late `sent` or `failed` never undoes a delivery.
    delivered: { sent: null, delivered: null, read: 'read', failed: null },
    // `read` is final: a late `delivered` (or anything else) never overwrites it.
    read: { sent: null, delivered: null, read: null, failed: null },
    // A `delivered`/`read` reported after `failed` is the fact (reports arrive out of order);
    // a late `sent` changes nothing.
    failed: { sent: null, delivered: 'delivered', read: 'read', failed: null },
  };

  for (const [current, row] of Object.entries(table) as Array<[OutboundStatus, Record<Reported, OutboundStatus | null>]>) {
    for (const [reported, expected] of Object.entries(row) as Array<[Reported, OutboundStatus | null]>) {
      test(`${current} + reported ${reported} -> ${expected ?? 'no change'}`, () => {
        assert.equal(combineStatus(current, reported), expected);
      });
    }
  }

  test('the table covers all 6 x 4 pairs', () => {
    assert.equal(Object.values(table).flatMap((row) => Object.keys(row)).length, 24);
  });

  test('out-of-order reports converge: sent, read, delivered ends at read', () => {
    let status: OutboundStatus = 'queued';
    for (const reported of ['sent', 'read', 'delivered', 'sent'] as const) {
      status = combineStatus(status, reported) ?? status;
    }
    assert.equal(status, 'read');
  });

  test('delivered then a late failed stays delivered', () => {
    let status: OutboundStatus = 'sent';
    for (const reported of ['delivered', 'failed'] as const) {
      status = combineStatus(status, reported) ?? status;
    }
    assert.equal(status, 'delivered');
  });
});

// ---------------------------------------------------------------------------------------
// outbound.ts
// ---------------------------------------------------------------------------------------

const button = (id: string, title: string) => ({ id, title });
const validButtons = { type: 'buttons' as const, body: 'Invoice INV-0007: KES 1,500. Pay now?', buttons: [button('pay', 'Pay now'), button('later', 'Later'), button('help', 'Help')] };

const row = (id: string, title: string, description?: string) => (description === undefined ? { id, title } : { id, title, description });
const rows = (count: number, prefix = 'r') => Array.from({ length: count }, (_, i) => row(`${prefix}${i}`, `Row ${prefix}${i}`));
const validList = { type: 'list' as const, body: 'Choose an invoice', button: 'Invoices', sections: [{ title: 'Unpaid', rows: rows(3) }] };

describe('ButtonsContent', () => {
  const cases: Array<{ name: string; value: unknown; ok: boolean }> = [
    { name: 'three buttons are accepted', value: validButtons, ok: true },
    { name: 'one button with a footer is accepted', value: { ...validButtons, footer: 'InvoiceIQ', buttons: [button('ok', 'OK')] }, ok: true },
    { name: 'a 20-char title is accepted', value: { ...validButtons, buttons: [button('a', 'x'.repeat(20))] }, ok: true },
    { name: 'a 1024-char body is accepted', value: { ...validButtons, body: 'b'.repeat(1024) }, ok: true },
    { name: 'a 256-char id is accepted', value: { ...validButtons, buttons: [button('i'.repeat(256), 'OK')] }, ok: true },
    { name: 'four buttons are refused', value: { ...validButtons, buttons: [...validButtons.buttons, button('more', 'More')] }, ok: false },
    { name: 'no buttons are refused', value: { ...validButtons, buttons: [] }, ok: false },
    { name: 'a 21-char title is refused', value: { ...validButtons, buttons: [button('a', 'x'.repeat(21))] }, ok: false },
    { name: 'an empty title is refused', value: { ...validButtons, buttons: [button('a', '')] }, ok: false },
    { name: 'a blank title is refused', value: { ...validButtons, buttons: [button('a', '   ')] }, ok: false },
    { name: 'duplicate titles are refused', value: { ...validButtons, buttons: [button('a', 'Pay'), button('b', 'Pay')] }, ok: false },
    { name: 'titles equal after trimming are refused', value: { ...validButtons, buttons: [button('a', 'Pay'), button('b', ' Pay ')] }, ok: false },
    { name: 'duplicate ids are refused', value: { ...validButtons, buttons: [button('pay', 'Pay now'), button('pay', 'Pay later')] }, ok: false },
    { name: 'a 257-char id is refused', value: { ...validButtons, buttons: [button('i'.repeat(257), 'OK')] }, ok: false },
    { name: 'a 1025-char body is refused', value: { ...validButtons, body: 'b'.repeat(1025) }, ok: false },
    { name: 'an empty body is refused', value: { ...validButtons, body: '' }, ok: false },
    { name: 'a 61-char footer is refused', value: { ...validButtons, footer: 'f'.repeat(61) }, ok: false },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const result = ButtonsContent.safeParse(c.value);
      assert.equal(result.success, c.ok, result.success ? 'accepted' : JSON.stringify(result.error.issues));
      // The union used for outbox content agrees with the member schema.
      assert.equal(MessageContent.safeParse(c.value).success, c.ok);
    });
  }

  test('titles are trimmed when parsed', () => {
    const parsed = ButtonsContent.parse({ ...validButtons, buttons: [button('a', '  Pay now  ')] });
    assert.equal(parsed.buttons[0]?.title, 'Pay now');
  });
});

describe('ListContent', () => {
  const cases: Array<{ name: string; value: unknown; ok: boolean }> = [
    { name: 'a list of 3 rows is accepted', value: validList, ok: true },
    { name: '10 rows in one section are accepted', value: { ...validList, sections: [{ rows: rows(10) }] }, ok: true },
    { name: '10 rows across two sections are accepted', value: { ...validList, sections: [{ title: 'A', rows: rows(6, 'a') }, { title: 'B', rows: rows(4, 'b') }] }, ok: true },
    { name: 'a 24-char row title and 72-char description are accepted', value: { ...validList, sections: [{ rows: [row('r', 't'.repeat(24), 'd'.repeat(72))] }] }, ok: true },
    { name: '11 rows in one section are refused', value: { ...validList, sections: [{ rows: rows(11) }] }, ok: false },
    { name: '11 rows across sections are refused', value: { ...validList, sections: [{ title: 'A', rows: rows(6, 'a') }, { title: 'B', rows: rows(5, 'b') }] }, ok: false },
    { name: '11 rows across many small sections are refused', value: { ...validList, sections: Array.from({ length: 10 }, (_, i) => ({ title: `S${i}`, rows: rows(i === 0 ? 2 : 1, `s${i}-`) })) }, ok: false },
    { name: 'a 25-char row title is refused', value: { ...validList, sections: [{ rows: [row('r', 't'.repeat(25))] }] }, ok: false },
    { name: 'a 73-char description is refused', value: { ...validList, sections: [{ rows: [row('r', 'Row', 'd'.repeat(73))] }] }, ok: false },
    { name: 'duplicate row ids across sections are refused', value: { ...validList, sections: [{ title: 'A', rows: [row('x', 'One')] }, { title: 'B', rows: [row('x', 'Two')] }] }, ok: false },
    { name: 'a 201-char row id is refused', value: { ...validList, sections: [{ rows: [row('i'.repeat(201), 'Row')] }] }, ok: false },
    { name: 'a section without rows is refused', value: { ...validList, sections: [{ title: 'Empty', rows: [] }] }, ok: false },
    { name: 'no sections are refused', value: { ...validList, sections: [] }, ok: false },
    { name: 'a 21-char button label is refused', value: { ...validList, button: 'x'.repeat(21) }, ok: false },
    { name: 'a 25-char section title is refused', value: { ...validList, sections: [{ title: 's'.repeat(25), rows: rows(1) }] }, ok: false },
    { name: 'a 1025-char body is refused', value: { ...validList, body: 'b'.repeat(1025) }, ok: false },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const result = ListContent.safeParse(c.value);
      assert.equal(result.success, c.ok, result.success ? 'accepted' : JSON.stringify(result.error.issues));
      assert.equal(MessageContent.safeParse(c.value).success, c.ok);
    });
  }
});

describe('TextContent', () => {
  test('4096 chars accepted, 4097 and blank refused', () => {
    assert.equal(TextContent.safeParse({ type: 'text', body: 'a'.repeat(4096) }).success, true);
    assert.equal(TextContent.safeParse({ type: 'text', body: 'a'.repeat(4097) }).success, false);
    assert.equal(TextContent.safeParse({ type: 'text', body: '  ' }).success, false);
  });
});

describe('smsText', () => {
  const cases: Array<{ name: string; payload: OutboundPayload; expected: string }> = [
    { name: 'text: the body', payload: { message: { type: 'text', body: 'Your invoice INV-0007 is paid. Thank you!' } }, expected: 'Your invoice INV-0007 is paid. Thank you!' },
    {
      name: 'buttons: the body and how to answer, titles upper-cased',
      payload: { message: { type: 'buttons', body: 'Pay INV-0007?', buttons: [button('pay', 'Pay now'), button('later', 'Later')] } },
      expected: 'Pay INV-0007?\nReply: PAY NOW / LATER',
    },
    {
      name: 'list: the body and every row title across sections',
      payload: { message: { type: 'list', body: 'Which invoice?', button: 'Invoices', sections: [{ title: 'Unpaid', rows: [row('a', 'INV-0007')] }, { title: 'Paid', rows: [row('b', 'INV-0003', 'KES 900'), row('c', 'INV-0002')] }] } },
      expected: 'Which invoice?\nReply with one of: INV-0007, INV-0003, INV-0002',
    },
    {
      name: 'list of invoices to pay: each row as the PAY command that chooses it (a title typed back is not a command), with the rest of its title',
      payload: {
        message: {
          type: 'list',
          body: 'You have 3 unpaid invoices.',
          button: 'Choose invoice',
          sections: [{ rows: [row('pay:INV-0002', 'INV-0002 - KES 800'), row('pay:INV-0007~1a2b3c4d', 'INV-0007 - KES 1,500'), row('pay:INV-0009', 'odd title')] }],
        },
      },
      expected: 'You have 3 unpaid invoices.\nReply with one of: PAY INV-0002 (KES 800), PAY INV-0007~1a2b3c4d (KES 1,500), PAY INV-0009 (odd title)',
    },
    {
      name: 'an explicit sms text overrides the derived one',
      payload: { message: { type: 'buttons', body: 'Pay INV-0007?', buttons: [button('pay', 'Pay now')] }, sms: 'Invoice INV-0007: KES 1,500. Pay via M-PESA paybill 174379.' },
      expected: 'Invoice INV-0007: KES 1,500. Pay via M-PESA paybill 174379.',
    },
    { name: 'an explicit sms text overrides a text message too', payload: { message: { type: 'text', body: 'Long WhatsApp text' }, sms: 'Short SMS' }, expected: 'Short SMS' },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.equal(smsText(OutboundPayload.parse(c.payload)), c.expected);
    });
  }

  test('a long text is cut to 918 chars (6 concatenated SMS)', () => {
    const text = smsText(OutboundPayload.parse({ message: { type: 'text', body: 'x'.repeat(4096) } }));
    assert.equal(text.length, 918);
  });

  test('a long buttons body is cut to 918 chars in all', () => {
    const text = smsText(OutboundPayload.parse({ message: { type: 'buttons', body: 'y'.repeat(1024), buttons: [button('a', 'Yes')] } }));
    assert.equal(text.length, 918);
    assert.ok(text.startsWith('y'.repeat(900)));
  });

  // The reply instructions are the only way an SMS reader learns how to answer: the body is
  // cut to make room for them, never the instructions.
  test('a long buttons body is cut, never the reply instructions', () => {
    const text = smsText(OutboundPayload.parse({ message: { type: 'buttons', body: 'y'.repeat(1000), buttons: [button('a', 'Yes'), button('b', 'No')] } }));
    assert.ok(text.length <= 918, `${text.length} chars`);
    assert.ok(text.endsWith('\nReply: YES / NO'), `ends with ${JSON.stringify(text.slice(-30))}`);
  });

  test('a long list body is cut, never the row titles to reply with', () => {
    const text = smsText(OutboundPayload.parse({ message: { type: 'list', body: 'z'.repeat(1000), button: 'Invoices', sections: [{ rows: [row('a', 'INV-0007'), row('b', 'INV-0003')] }] } }));
    assert.ok(text.length <= 918, `${text.length} chars`);
    assert.ok(text.endsWith('\nReply with one of: INV-0007, INV-0003'), `ends with ${JSON.stringify(text.slice(-40))}`);
  });

  test('an explicit sms text over 918 chars is refused by the payload schema', () => {
    assert.equal(OutboundPayload.safeParse({ message: { type: 'text', body: 'hi' }, sms: 's'.repeat(919) }).success, false);
    assert.equal(OutboundPayload.safeParse({ message: { type: 'text', body: 'hi' }, sms: 's'.repeat(918) }).success, true);
  });
});

describe('OutboundPayload', () => {
  const payloads: Array<{ name: string; value: unknown }> = [
    { name: 'text', value: { message: { type: 'text', body: 'Habari! Your invoice is ready.' } } },
    { name: 'buttons with footer, sms and template', value: { message: { ...validButtons, footer: 'InvoiceIQ' }, sms: 'Pay INV-0007: reply PAY', template: { parameters: ['Wanjiku', 'INV-0007', 'KES 1,500'], buttonPayload: 'pay:INV-0007' } } },
    { name: 'list with unicode', value: { message: { type: 'list', body: 'Chagua ankara 📄 — café', button: 'Ankara', sections: [{ title: 'Zisizolipwa', rows: [row('a', 'INV-0007', 'KES 1,500 · due 1 Mar')] }] } } },
    { name: 'template without button payload', value: { message: { type: 'text', body: 'Reminder' }, template: { parameters: [] } } },
  ];

  for (const p of payloads) {
    test(`${p.name}: round-trips through structuredClone and JSON`, () => {
      const parsed = OutboundPayload.parse(p.value);
      const cloned: unknown = structuredClone(parsed);
      const viaJson: unknown = JSON.parse(JSON.stringify(parsed));
      assert.deepEqual(cloned, parsed);
      assert.deepEqual(viaJson, parsed);
      assert.deepEqual(OutboundPayload.parse(cloned), parsed);
      assert.deepEqual(OutboundPayload.parse(viaJson), parsed);
      assert.equal(smsText(OutboundPayload.parse(viaJson)), smsText(parsed));
    });
  }

  test('template parameters: at most 10, none empty', () => {
    const base = { message: { type: 'text', body: 'x' } };
    assert.equal(OutboundPayload.safeParse({ ...base, template: { parameters: Array.from({ length: 10 }, (_, i) => `p${i}`) } }).success, true);
    assert.equal(OutboundPayload.safeParse({ ...base, template: { parameters: Array.from({ length: 11 }, (_, i) => `p${i}`) } }).success, false);
    assert.equal(OutboundPayload.safeParse({ ...base, template: { parameters: [''] } }).success, false);
  });

  test('an unknown message type is refused', () => {
    assert.equal(OutboundPayload.safeParse({ message: { type: 'image', body: 'x' } }).success, false);
  });
});

describe('truncate', () => {
  test('never splits an emoji (a surrogate pair) at the cut', () => {
    const text = `${'a'.repeat(9)}😀tail`;
    assert.equal(truncate(text, 10), 'a'.repeat(9));
    assert.equal(truncate(text, 11), `${'a'.repeat(9)}😀`);
    assert.equal(truncate('short', 10), 'short');
  });
});
