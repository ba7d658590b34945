/**
 * Review of the incoming-SMS route (commit c63dcfc: POST /sms/inbound/<SMS_INBOUND_TOKEN>).
 *
 * Real HTTP (the fixture's app served on 127.0.0.1), a real database (PGlite, or Postgres with
 * TEST_DATABASE_URL), a fake Daraja on 127.0.0.1 and Africa's Talking intercepted, as in
 * test/sms-inbound.test.ts. Faults are injected with database triggers, never mocked modules.
 *
 * The first describe holds the review's findings: each test failed on c63dcfc and passes since
 * the fix (the SMS list hint names PAY <invoice>; numbers read in JSON; the secret masked on any
 * spelling of the path). The others pin behaviour checked and found right.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import { serve } from '@hono/node-server';
import { sql } from 'kysely';
import { runMigrateCommand } from '../src/db/migrate.js';
import { sentAt } from '../src/inbound/sms-message.js';
import type { FakeDaraja } from './fakes/daraja.js';
import { envelope, wamid } from './fixtures/whatsapp.js';
import { buildTestApp } from './helpers/app.js';
import { waitFor, type ChannelFixture } from './helpers/channel.js';
import { cancelNextPrompt, pushesTo, smsFrom, startSmsFixture } from './helpers/sms-inbound.js';
import { createEmptyDatabase } from './helpers/database.js';

const INBOUND_TOKEN = 'review-inbound-secret-0123456789abcdef';

let f: ChannelFixture;
let daraja: FakeDaraja;
let server: ReturnType<typeof serve>;
let base: string;

before(async () => {
  ({ f, daraja } = await startSmsFixture(INBOUND_TOKEN, { INBOUND_MAX_ATTEMPTS: '5' }));
  server = serve({ fetch: f.app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  await new Promise<void>((resolve) => {
    (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
    server.close(() => resolve());
  });
  await f.close();
  await daraja.close();
});
beforeEach(() => daraja.reset());

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

let seq = 0;
const db = () => f.database.handle.db;

/** A WhatsApp text through the signed webhook (in-process, as the other suites do). */
const say = (from: string, body: string) =>
  f.post(envelope({ messages: [{ from, id: wamid(), timestamp: String(Math.floor(Date.now() / 1000)), type: 'text', text: { body } }] }));

/** Africa's Talking's incoming-message callback over real HTTP. */
function incoming(fields: Record<string, unknown>, options: { token?: string; contentType?: string; path?: string; method?: string } = {}): Promise<Response> {
  const contentType = options.contentType ?? 'application/x-www-form-urlencoded';
  const body = contentType.includes('json') ? JSON.stringify(fields) : new URLSearchParams(fields as Record<string, string>).toString();
  const path = options.path ?? `/sms/inbound/${options.token ?? INBOUND_TOKEN}`;
  return fetch(`${base}${path}`, { method: options.method ?? 'POST', headers: { 'content-type': contentType }, body });
}

const smsFromCustomer = (customer: string, text: string, id = `ATXid_rv_${process.pid}_${(seq += 1)}`) => smsFrom(customer, text, id);
const pushes = (customer: string) => pushesTo(daraja, customer);
const smsTo = (customer: string) => f.sms.filter((m) => m.to === `+${customer}`).map((m) => m.message);
const answersTo = (customer: string) => [...smsTo(customer), ...f.sentTexts(customer)];

/** The log lines written since `mark` (f.logs.lines.length taken earlier), as text. */
const logMark = () => f.logs.lines.length;
const logsSince = (mark: number) => f.logs.lines.slice(mark).map((line) => JSON.stringify(line)).join('\n');

async function metric(name: string, labels: string): Promise<number> {
  const text = await f.deps.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

/** Fresh merchant/customer numbers (different from every other suite's). */
function people() {
  seq += 1;
  const n = String(seq % 100).padStart(2, '0');
  const stamp = String(process.pid % 100).padStart(2, '0');
  return { merchant: `25472219${stamp}${n}`, customer: `25473319${stamp}${n}` };
}

/** The merchant registers on WhatsApp. */
async function registerMerchant(merchant: string) {
  await say(merchant, 'hi');
  await say(merchant, `Duka ${merchant.slice(-4)}`);
}

/** The merchant sends an invoice on WhatsApp; its first prompt reaches Daraja and the customer cancels it. */
async function invoiceWithCancelledPrompt(merchant: string, customer: string, amount: number, what: string) {
  const pushesBefore = pushes(customer).length;
  await say(merchant, `invoice ${customer} ${amount} ${what}`);
  await say(merchant, 'yes');
  const invoice = await db().selectFrom('invoices').select(['id', 'number']).where('customer_phone', '=', customer).where('amount', '=', String(amount)).executeTakeFirstOrThrow();
  await cancelNextPrompt(f, daraja, customer, invoice.id, pushesBefore);
  return invoice;
}

/** One merchant, one customer not on WhatsApp, one invoice whose prompt was cancelled (the customer was told "reply PAY" by SMS). */
async function cancelledPrompt() {
  const { merchant, customer } = people();
  await registerMerchant(merchant);
  const invoice = await invoiceWithCancelledPrompt(merchant, customer, 1500, 'flour');
  return { merchant, customer, invoice };
}

/** Every customer number an SMS came from in this file (none may reach the logs whole). */
const smsSenders = new Set<string>();
const remember = <T extends { customer: string }>(s: T) => (smsSenders.add(s.customer), s);

// ---------------------------------------------------------------------------------------------
// Findings: these fail on the current code
// ---------------------------------------------------------------------------------------------

describe('was a defect (review of c63dcfc)', () => {
  /**
   * FINDING 1 (src/inbound/sms-message.ts runs the turn; the SMS form of the answer is
   * src/domain/outbound.ts smsText, the list from src/domain/texts.ts payList; the reply is read
   * by src/domain/parse.ts parseCommand / src/domain/conversation/machine.ts newcomerTurn).
   * A customer with two unpaid invoices who replies PAY by SMS gets the WhatsApp list rendered as
   * SMS: "... Tap Choose invoice ...\nReply with one of: INV-0001 - KES 700, INV-0002 - KES 800".
   * Replying exactly that (there is no list to tap on SMS) is read as an unknown text, so the
   * customer gets the same list again, forever: no prompt ever starts. Before this change an SMS
   * could not be answered at all; now it is the channel the "reply PAY" notice tells people to use,
   * and the customers it matters for (several unpaid invoices) cannot pay by following it.
   */
  test('a customer with two unpaid invoices who replies by SMS with one of the choices the SMS offers gets a prompt for that invoice', async () => {
    const { merchant, customer } = remember(people());
    await registerMerchant(merchant);
    const first = await invoiceWithCancelledPrompt(merchant, customer, 700, 'flour');
    await invoiceWithCancelledPrompt(merchant, customer, 800, 'sugar');
    assert.equal(pushes(customer).length, 2);
    const before = smsTo(customer).length;

    assert.deepEqual(await (await incoming(smsFromCustomer(customer, 'PAY'))).json(), { status: 'processed' });
    await f.deps.outbox.idle();
    const list = smsTo(customer).slice(before);
    assert.equal(list.length, 1, `one answer: ${JSON.stringify(list)}`);
    // What the SMS tells the customer to reply for the first invoice: today the list's hint
    // ("Reply with one of: INV-0002 - KES 800, INV-0001 - KES 700"); a fix may instead say
    // "PAY INV-0001", which the test follows just as well.
    const wanted = `INV-${String(first.number).padStart(4, '0')}`;
    const payHint = new RegExp(`\\b((?:PAY|LIPA) ${wanted})\\b`, 'i').exec(list[0]!);
    const listHint = /Reply with one of: (.+)$/m.exec(list[0]!);
    assert.ok(payHint !== null || listHint !== null, `the SMS says how to choose: ${list[0]}`);
    const choice = payHint !== null ? payHint[1]! : listHint![1]!.split(', ').find((c) => c.includes(wanted));
    assert.ok(choice !== undefined, `a choice for ${wanted}: ${list[0]}`);

    // The customer does what the SMS says: replies with one of the choices.
    assert.deepEqual(await (await incoming(smsFromCustomer(customer, choice))).json(), { status: 'processed' });
    await f.deps.outbox.idle();
    const reply = smsTo(customer).at(-1)!;
    await waitFor(() => pushes(customer).length === 3, 10_000, `a new prompt for the chosen invoice (the answer was: ${JSON.stringify(reply)})`);
    assert.equal(pushes(customer).at(-1)!.body.Amount, 700);
  });

  /**
   * FINDING 2 (src/inbound/sms-message.ts, IncomingSms). The route takes JSON bodies, and the
   * schema itself expects JSON to carry numbers (networkCode: string or number, as
   * DeliveryReport does for networkCode and retryCount). But `to` (the short code, e.g. 20880,
   * which is all digits) is string-only: the same message with "to": 20880 is answered 422 and
   * never stored. A 422 is final: the customer's PAY is dropped (or, if the provider retries
   * non-2xx, retried and refused forever). `to` is not even used; it should read either way.
   */
  test('a JSON body whose short code ("to") is a number is taken, as networkCode is', async () => {
    const s = remember(await cancelledPrompt());
    const message = { ...smsFromCustomer(s.customer, 'PAY'), to: 20880, networkCode: 63902 };
    const res = await incoming(message, { contentType: 'application/json' });
    const body = await res.text();
    assert.equal(res.status, 200, `answered ${res.status}: ${body}`);
    assert.deepEqual(JSON.parse(body), { status: 'processed' });
    await waitFor(() => pushes(s.customer).length === 2, 10_000, 'the new stk push');
  });

  /**
   * FINDING 3 (src/http/middleware.ts, secretPaths / loggablePath). The secret path is masked in
   * the request log only when the path starts exactly with "/sms/inbound/". A callback URL set up
   * in Africa's Talking's dashboard as "https://<app>/" + "/sms/inbound/<token>" (a base URL
   * with a trailing slash: a common slip) arrives as "//sms/inbound/<token>": no route matches
   * (404), and the request log line carries the whole, real token, once per customer text, to
   * every log sink. Whoever reads the logs can then post texts as any customer. The masking
   * should not depend on the path being well-formed (e.g. mask the configured token wherever it
   * appears, or match the pattern anywhere in the path).
   */
  test('a 404 on the secret path reached with a doubled slash does not put the token in the logs', async () => {
    const res = await incoming(smsFromCustomer('254733100001', 'PAY'), { path: `//sms/inbound/${INBOUND_TOKEN}` });
    assert.equal(res.status, 404);
    const leaked = f.logs.lines.filter((l) => JSON.stringify(l).includes(INBOUND_TOKEN));
    assert.deepEqual(leaked, [], 'the secret reached the logs');
  });
});

// ---------------------------------------------------------------------------------------------
// Checked and found right
// ---------------------------------------------------------------------------------------------

describe('retries: an SMS whose first apply fails is applied once by the retry job', () => {
  test('the turn fails once (the prompt insert refused): answered 200 "retrying", kept, applied by the retry job once; a re-delivery is a duplicate', async () => {
    const s = remember(await cancelledPrompt());
    const before = smsTo(s.customer).length;
    await sql`create sequence if not exists review_fault_seq`.execute(db());
    await sql.raw(`create or replace function review_refuse_attempt() returns trigger language plpgsql as $$
      begin
        if new.phone = '${s.customer}' and nextval('review_fault_seq') = 1 then raise exception 'refused once for the review'; end if;
        return new;
      end $$`).execute(db());
    await sql`create trigger review_refuse_attempt before insert on payment_attempts for each row execute function review_refuse_attempt()`.execute(db());
    try {
      const message = smsFromCustomer(s.customer, 'PAY');
      const res = await incoming(message);
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { status: 'retrying' });
      const kept = await db().selectFrom('inbound_events').select(['id', 'status']).where('source', '=', 'sms_message').where('external_key', '=', message.id).executeTakeFirstOrThrow();
      assert.equal(kept.status, 'retrying');
      // Africa's Talking delivers it again meanwhile: nothing more happens.
      assert.deepEqual(await (await incoming(message)).json(), { status: 'duplicate' });

      await waitFor(async () => (await db().selectFrom('inbound_events').select('status').where('id', '=', kept.id).executeTakeFirstOrThrow()).status === 'processed', 20_000, 'the retry job applied it');
      await waitFor(() => pushes(s.customer).length === 2, 10_000, 'the new stk push');
      await f.deps.outbox.idle();
      assert.equal(await f.deps.inbound.retryEvent(kept.id), 'not_pending', 'a second retry does nothing');
      assert.deepEqual(await (await incoming(message)).json(), { status: 'duplicate' });
      await new Promise((resolve) => setTimeout(resolve, 300));
      await f.deps.outbox.idle();
      assert.equal(pushes(s.customer).length, 2, 'one new prompt');
      const answers = smsTo(s.customer).slice(before);
      assert.equal(answers.length, 1, `one answer by SMS: ${JSON.stringify(answers)}`);
      assert.match(answers[0]!, /M-PESA PIN/);
      const conversation = await db().selectFrom('conversations').select('last_inbound_at').where('phone', '=', s.customer).executeTakeFirstOrThrow();
      assert.equal(conversation.last_inbound_at, null, 'the retried SMS did not open the WhatsApp window either');
    } finally {
      await sql`drop trigger if exists review_refuse_attempt on payment_attempts`.execute(db());
    }
  });

  test('not even storable: 500 (the provider delivers again), the token not logged; delivered again later it applies once', async () => {
    const s = remember(await cancelledPrompt());
    const mark = logMark();
    const message = smsFromCustomer(s.customer, 'PAY');
    await sql.raw(`create or replace function review_refuse_event() returns trigger language plpgsql as $$
      begin
        if new.source = 'sms_message' and new.external_key = '${message.id}' then raise exception 'refused for the review'; end if;
        return new;
      end $$`).execute(db());
    await sql`create trigger review_refuse_event before insert on inbound_events for each row execute function review_refuse_event()`.execute(db());
    let dropped = false;
    try {
      const res = await incoming(message);
      assert.equal(res.status, 500);
      assert.equal((await db().selectFrom('inbound_events').select('id').where('external_key', '=', message.id).execute()).length, 0);
      assert.ok(f.logs.lines.slice(mark).some((l) => l.message === 'request failed'));
      assert.ok(f.logs.lines.slice(mark).some((l) => l.message === 'unhandled error'));
      assert.ok(!logsSince(mark).includes(INBOUND_TOKEN), 'the secret reached the logs');
      await sql`drop trigger review_refuse_event on inbound_events`.execute(db());
      dropped = true;
      const again = await Promise.all([incoming(message), incoming(message)]);
      assert.deepEqual((await Promise.all(again.map((r) => r.json() as Promise<{ status: string }>))).map((b) => b.status).sort(), ['duplicate', 'processed']);
      await waitFor(() => pushes(s.customer).length === 2, 10_000, 'the new stk push');
      await f.deps.outbox.idle();
      assert.equal(pushes(s.customer).length, 2);
    } finally {
      if (!dropped) await sql`drop trigger if exists review_refuse_event on inbound_events`.execute(db());
    }
  });
});

describe('SMS and WhatsApp from one person at the same moment', () => {
  test('PAY by SMS and PAY on WhatsApp at once start one prompt (the conversation row and the invoice lock serialise them); three rounds', async () => {
    for (let round = 0; round < 3; round += 1) {
      const s = remember(await cancelledPrompt());
      const answersBefore = answersTo(s.customer).length;
      const [sms, wa] = await Promise.all([incoming(smsFromCustomer(s.customer, 'PAY')), say(s.customer, 'PAY')]);
      assert.equal(sms.status, 200);
      assert.equal(wa.status, 200);
      assert.deepEqual(await sms.json(), { status: 'processed' });
      await waitFor(() => pushes(s.customer).length >= 2, 10_000, 'the new stk push');
      await new Promise((resolve) => setTimeout(resolve, 300));
      await f.deps.outbox.idle();
      assert.equal(pushes(s.customer).length, 2, `round ${round}: one new prompt`);
      const attempts = await db().selectFrom('payment_attempts').select('id').where('invoice_id', '=', s.invoice.id).execute();
      assert.equal(attempts.length, 2, `round ${round}: one new attempt`);
      const answers = answersTo(s.customer).slice(answersBefore);
      assert.equal(answers.length, 2, `round ${round}: one answer each: ${JSON.stringify(answers)}`);
      assert.equal(answers.filter((a) => /M-PESA PIN/.test(a)).length, 1, `round ${round}: ${JSON.stringify(answers)}`);
      assert.equal(answers.filter((a) => /less than 2 minutes/.test(a)).length, 1, `round ${round}: ${JSON.stringify(answers)}`);
    }
  });

  test('two different SMS PAYs from one customer at once (two message ids) start one prompt: one answer says so, the other that it is pending', async () => {
    const s = remember(await cancelledPrompt());
    const before = smsTo(s.customer).length;
    const statuses = await Promise.all([incoming(smsFromCustomer(s.customer, 'PAY')), incoming(smsFromCustomer(s.customer, 'pay'))]);
    assert.deepEqual(await Promise.all(statuses.map((r) => r.json())), [{ status: 'processed' }, { status: 'processed' }]);
    await waitFor(() => pushes(s.customer).length >= 2, 10_000, 'the new stk push');
    await new Promise((resolve) => setTimeout(resolve, 300));
    await f.deps.outbox.idle();
    assert.equal(pushes(s.customer).length, 2);
    const answers = smsTo(s.customer).slice(before);
    assert.equal(answers.length, 2, JSON.stringify(answers));
    assert.equal(answers.filter((a) => /M-PESA PIN/.test(a)).length, 1, JSON.stringify(answers));
    assert.equal(answers.filter((a) => /less than 2 minutes/.test(a)).length, 1, JSON.stringify(answers));
  });

  test('a number writing for the first time on both channels at once gets one conversation row, and both messages are answered', async () => {
    const { customer } = remember(people());
    const [sms, wa] = await Promise.all([incoming(smsFromCustomer(customer, 'hello')), say(customer, 'hello')]);
    assert.equal(sms.status, 200);
    assert.equal(wa.status, 200);
    assert.deepEqual(await sms.json(), { status: 'processed' });
    await f.deps.outbox.idle();
    const rows = await db().selectFrom('conversations').select(['phone', 'last_inbound_at']).where('phone', '=', customer).execute();
    assert.equal(rows.length, 1);
    assert.notEqual(rows[0]!.last_inbound_at, null, 'the WhatsApp message opened the window');
    assert.equal(answersTo(customer).length, 2);
  });
});

describe('a merchant texting the SMS number', () => {
  /**
   * The sender of an SMS is only the mobile network's word (a grey route can forge it); Meta
   * verifies a WhatsApp number. So by SMS a merchant can read (the answer goes to the number
   * itself) and pay, but not create, confirm, remind or cancel: a forged SMS in a merchant's
   * name changes nothing of theirs and prompts nobody.
   */
  test('reads work by SMS; creating, confirming, reminding and cancelling are refused with a pointer to WhatsApp, and change nothing', async () => {
    const { merchant, customer } = people();
    smsSenders.add(merchant);
    await registerMerchant(merchant);
    // An invoice made on WhatsApp, left waiting for its confirmation there.
    await say(merchant, `invoice ${customer} 700 rice`);
    await say(merchant, 'yes');
    await waitFor(() => pushes(customer).length === 1, 10_000, 'the WhatsApp invoice stk push');
    await say(merchant, `invoice ${customer} 900 sugar`);
    await f.deps.outbox.idle();
    // The merchant's WhatsApp window is closed (24 hours later): answers go by SMS.
    await db().updateTable('conversations').set({ last_inbound_at: null }).where('phone', '=', merchant).execute();
    const invoice = await db().selectFrom('invoices').select(['number', 'status']).where('customer_phone', '=', customer).executeTakeFirstOrThrow();
    const stateBefore = (await db().selectFrom('conversations').select('state').where('phone', '=', merchant).executeTakeFirstOrThrow()).state;
    const before = smsTo(merchant).length;
    const refused = [`invoice ${customer} 1200 salt`, 'SEND', `remind ${invoice.number}`, `cancel ${invoice.number}`, 'new', 'dashboard'];
    for (const text of refused) {
      assert.deepEqual(await (await incoming(smsFromCustomer(merchant, text))).json(), { status: 'processed' }, text);
      await f.deps.outbox.idle();
    }
    const answers = smsTo(merchant).slice(before);
    assert.equal(answers.length, refused.length, JSON.stringify(answers));
    for (const answer of answers) assert.match(answer, /only on WhatsApp/, JSON.stringify(answers));
    // Nothing changed: one invoice (the WhatsApp one, still sent), one prompt, the WhatsApp draft waiting as it was.
    const rows = await db().selectFrom('invoices').select(['amount', 'status']).where('customer_phone', '=', customer).execute();
    assert.deepEqual(rows.map((r) => [Number(r.amount), r.status]), [[700, invoice.status]]);
    assert.equal(pushes(customer).length, 1);
    const stateAfter = (await db().selectFrom('conversations').select('state').where('phone', '=', merchant).executeTakeFirstOrThrow()).state;
    assert.deepEqual(stateAfter, stateBefore);
    // Reads answer by SMS.
    const mark = smsTo(merchant).length;
    await incoming(smsFromCustomer(merchant, `status ${invoice.number}`));
    await incoming(smsFromCustomer(merchant, 'list'));
    await f.deps.outbox.idle();
    const reads = smsTo(merchant).slice(mark);
    assert.equal(reads.length, 2, JSON.stringify(reads));
    assert.ok(reads.every((m) => /INV-/.test(m) && !/only on WhatsApp/.test(m)), JSON.stringify(reads));
    // On WhatsApp the waiting draft is confirmed as usual.
    await say(merchant, 'yes');
    await waitFor(() => pushes(customer).length === 2, 10_000, 'the second invoice stk push');
    const after = await db().selectFrom('invoices').select('amount').where('customer_phone', '=', customer).orderBy('number').execute();
    assert.deepEqual(after.map((r) => Number(r.amount)), [700, 900]);
  });

  test('a number that is nobody yet cannot register a business by SMS: it is pointed to WhatsApp and no merchant is made', async () => {
    const { merchant } = people();
    smsSenders.add(merchant);
    for (const text of ['hi', 'Duka la Uongo']) {
      assert.deepEqual(await (await incoming(smsFromCustomer(merchant, text))).json(), { status: 'processed' });
      await f.deps.outbox.idle();
    }
    const answers = smsTo(merchant);
    assert.equal(answers.length, 2, JSON.stringify(answers));
    for (const answer of answers) assert.match(answer, /register your business, please message us on WhatsApp/, JSON.stringify(answers));
    assert.equal(await db().selectFrom('merchants').select('id').where('phone', '=', merchant).executeTakeFirst(), undefined);
  });
});

describe('what Africa\'s Talking sends is read', () => {
  test('odd dates (in the future, not a date, ISO with a zone) are kept and processed; sentAt never runs ahead of now', async () => {
    for (const date of ['2099-01-01 00:00:00', 'not a date', '2026-12-02T07:30:00.000Z']) {
      const { customer } = remember(people());
      const res = await incoming({ ...smsFromCustomer(customer, 'hello'), date });
      assert.equal(res.status, 200, date);
      assert.deepEqual(await res.json(), { status: 'processed' });
    }
    const now = new Date('2026-12-02T08:00:00Z');
    const at = (date: string) => sentAt({ id: 'x', from: 'x', text: '', date }, now).toISOString();
    assert.equal(at('2026-12-02 07:30:00'), '2026-12-02T07:30:00.000Z');
    assert.equal(at('2026-12-02 10:30:00'), now.toISOString(), 'ahead of now: now');
    assert.equal(at('garbage'), now.toISOString());
  });

  test('an empty text, a 10-part text (1,530 characters), extra fields and a NUL are taken; the answer goes by SMS', async () => {
    const cases: Array<Record<string, string>> = [
      { text: '' },
      { text: 'a'.repeat(1530) },
      { text: 'hello', cost: 'KES 0.0000', keyword: 'PAY', extra: 'x' },
      { text: 'he\u0000llo' },
    ];
    for (const fields of cases) {
      const { customer } = remember(people());
      const before = smsTo(customer).length;
      const res = await incoming({ ...smsFromCustomer(customer, 'x'), ...fields });
      assert.equal(res.status, 200, JSON.stringify(Object.keys(fields)));
      assert.deepEqual(await res.json(), { status: 'processed' });
      await f.deps.outbox.idle();
      assert.equal(smsTo(customer).length - before, 1, 'answered by SMS');
    }
  });

  test('a charset on the form content type is read; 400 for broken JSON; nothing stored for either refusal', async () => {
    const { customer } = remember(people());
    const ok = await incoming(smsFromCustomer(customer, 'hello'), { contentType: 'application/x-www-form-urlencoded; charset=UTF-8' });
    assert.equal(ok.status, 200);
    const before = await f.count('inbound_events');
    const broken = await fetch(`${base}/sms/inbound/${INBOUND_TOKEN}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"id":' });
    assert.equal(broken.status, 400);
    const noText = await incoming({ id: 'ATXid_rv_notext', from: `+${customer}` });
    assert.equal(noText.status, 422);
    assert.equal(await f.count('inbound_events'), before);
  });
});

describe('the secret stays secret', () => {
  test('wrong token, a GET, a trailing slash and a body over the limit: 404/413, nothing stored, the token in no log line and no metric label', async () => {
    const mark = logMark();
    const before = await f.count('inbound_events');
    const forgedBefore = await metric('invoiceiq_inbound_events_total', 'outcome="forged"');
    const wrong = `${INBOUND_TOKEN.slice(0, -1)}X`;
    assert.equal((await incoming(smsFromCustomer('254733100002', 'PAY'), { token: wrong })).status, 404);
    assert.equal(await metric('invoiceiq_inbound_events_total', 'outcome="forged"'), forgedBefore + 1);
    assert.equal((await fetch(`${base}/sms/inbound/${INBOUND_TOKEN}`)).status, 404);
    assert.equal((await incoming(smsFromCustomer('254733100003', 'PAY'), { path: `/sms/inbound/${INBOUND_TOKEN}/` })).status, 404);
    assert.equal((await incoming({ ...smsFromCustomer('254733100004', 'PAY'), text: 'x'.repeat(70_000) })).status, 413);
    assert.equal(await f.count('inbound_events'), before);
    const logs = logsSince(mark);
    assert.ok(logs.includes('incoming SMS refused'));
    assert.ok(!logs.includes(INBOUND_TOKEN), 'the secret reached the logs');
    assert.ok(!logs.includes(wrong), 'the offered token reached the logs');
    const metrics = await f.deps.metrics.registry.metrics();
    assert.ok(!metrics.includes(INBOUND_TOKEN.slice(0, 20)), 'the secret reached the metrics');
    assert.ok(metrics.includes('route="/sms/inbound/:token"'), 'requests are counted under the route pattern');
  });

  test('not configured: the route answers 404, counts not_configured, stores nothing', async () => {
    const closed = buildTestApp(f.database, { env: { SMS_API_KEY: 'at-api-key-secret', SMS_USERNAME: 'invoiceiq' } });
    const other = serve({ fetch: closed.app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise<void>((resolve) => other.once('listening', () => resolve()));
    try {
      const before = await f.count('inbound_events');
      const res = await fetch(`http://127.0.0.1:${(other.address() as AddressInfo).port}/sms/inbound/${INBOUND_TOKEN}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(smsFromCustomer('254733100005', 'PAY')).toString(),
      });
      assert.equal(res.status, 404);
      assert.equal(((await res.json()) as { code: string }).code, 'not_found');
      assert.equal(await f.count('inbound_events'), before);
      assert.match(await closed.deps.metrics.registry.metrics(), /invoiceiq_inbound_events_total\{source="sms_message",outcome="not_configured"\} 1/);
      assert.ok(!closed.logs.text().includes(INBOUND_TOKEN));
    } finally {
      await new Promise<void>((resolve) => {
        (other as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        other.close(() => resolve());
      });
    }
  });

  test('no whole phone number of an SMS sender in any log line written by this file', () => {
    assert.ok(smsSenders.size > 5);
    const logs = f.logs.text();
    for (const phone of smsSenders) assert.ok(!logs.includes(phone), `${phone.slice(0, 4)}… appears whole in the logs`);
  });
});

describe('the migration', () => {
  test('down removes the SMS events and the source; up allows it again', async () => {
    const empty = await createEmptyDatabase();
    try {
      const d = empty.handle.db;
      // By name: later migrations (someone else's) may follow this one.
      const THIS = '2026_12_02_0015_inbound_sms';
      const BEFORE_THIS = '2026_12_01_0014_outbox_provider_ids_partial';
      const lines: string[] = [];
      await runMigrateCommand(d, ['to', THIS], (line) => lines.push(line));
      const insert = (key: string) =>
        sql`insert into inbound_events (source, external_key, payload, status) values ('sms_message', ${key}, '{}'::jsonb, 'processed')`.execute(d);
      await insert('ATXid_before_down');
      await runMigrateCommand(d, ['to', BEFORE_THIS], (line) => lines.push(line));
      assert.ok(lines.includes(`reverted ${THIS}`), lines.join('\n'));
      const left = await sql<{ n: string }>`select count(*)::text as n from inbound_events where source = 'sms_message'`.execute(d);
      assert.equal(left.rows[0]!.n, '0');
      await assert.rejects(insert('ATXid_after_down'), /inbound_events_source_check/);
      await runMigrateCommand(d, ['to', THIS], (line) => lines.push(line));
      await insert('ATXid_after_up');
      await assert.rejects(
        sql`insert into inbound_events (source, external_key, payload) values ('sms_other', 'k', '{}'::jsonb)`.execute(d),
        /inbound_events_source_check/,
      );
      for (const source of ['whatsapp_message', 'whatsapp_status', 'whatsapp_payload', 'mpesa_callback', 'sms_report']) {
        await sql`insert into inbound_events (source, external_key, payload) values (${source}, 'k', '{}'::jsonb)`.execute(d);
      }
    } finally {
      await empty.dispose();
    }
  });
});
