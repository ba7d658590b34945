/**
 * A Pay button names exactly one invoice, though every merchant numbers from INV-0001 (each test
 * failed on the code before its fix), on both databases (one race needs two connections, so
 * Postgres only), through signed webhooks, the real conversation, payments and a fake Daraja:
 * - the Pay button of an invoice, a reminder (its template's quick reply too) carries the
 *   invoice's id tag (`pay:INV-0001~<id8>`): a tap on Duka A's paid or cancelled INV-0001 says so,
 *   and never starts a prompt for Duka B's INV-0001 (another amount);
 * - an untagged button (sent before the tag) pays only while its number names one unpaid
 *   invoice and nothing settled; otherwise the customer chooses among their unpaid invoices;
 * - `pay N` for a paid invoice says it is paid; for no invoice of theirs, lists the unpaid ones
 *   (before: "You have no invoices to pay right now", with others unpaid);
 * - `remind N` tells the merchant whether a new prompt went, or an earlier one may still be on
 *   the customer's phone (before: "with a new M-PESA prompt" when none was sent);
 * - a push claiming while a cancel of its invoice is being committed waits for it, and sends
 *   no prompt for the cancelled invoice.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { MessageContent, OutboundPayload } from '../src/domain/outbound.js';
import { payButtonId, texts } from '../src/domain/texts.js';
import { sha256Hex } from '../src/security.js';
import type { FakeDaraja } from './fakes/daraja.js';
import { envelope, wamid } from './fixtures/whatsapp.js';
import { waitFor, type ChannelFixture } from './helpers/channel.js';
import { mpesaSuite } from './helpers/mpesa-env.js';

let clock = new Date('2026-11-22T07:00:00.000Z').getTime();
const now = () => new Date(clock);

let f: ChannelFixture;
let daraja: FakeDaraja;
mpesaSuite(now, (fixture, fake) => {
  f = fixture;
  daraja = fake;
});

const db = () => f.database.handle.db;
const timestamp = () => String(Math.floor(clock / 1000));
let seq = 0;

function say(from: string, body: string) {
  return f.post(envelope({ contacts: [{ profile: { name: 'x' }, wa_id: from }], messages: [{ from, id: wamid(), timestamp: timestamp(), type: 'text', text: { body } }] }));
}
/** A tap on an interactive message's button (or list row) with this id. */
function tap(from: string, id: string, kind: 'button_reply' | 'list_reply' = 'button_reply') {
  return f.post(envelope({ messages: [{ from, id: wamid(), timestamp: timestamp(), type: 'interactive', interactive: { type: kind, [kind]: { id, title: 'Pay now' } } }] }));
}
/** A tap on a template's quick-reply button: Meta sends back its payload. */
function tapTemplate(from: string, payload: string) {
  return f.post(envelope({ messages: [{ from, id: wamid(), timestamp: timestamp(), type: 'button', button: { payload, text: 'Pay' } }] }));
}

/** The latest reply of the conversation to `phone`. */
async function lastReply(phone: string): Promise<MessageContent> {
  const row = await db().selectFrom('outbound_messages').select('content').where('recipient', '=', phone).where('kind', '=', 'reply').orderBy('created_at', 'desc').executeTakeFirstOrThrow();
  return (row.content as OutboundPayload).message;
}
/** The message of `kind` about the invoice (its Pay button, and its template's payload). */
async function messageAbout(invoiceId: string, kind: 'invoice' | 'reminder'): Promise<OutboundPayload> {
  const row = await db().selectFrom('outbound_messages').select('content').where('invoice_id', '=', invoiceId).where('kind', '=', kind).orderBy('created_at', 'desc').executeTakeFirstOrThrow();
  return row.content as OutboundPayload;
}
const buttonIds = (message: MessageContent) => (message.type === 'buttons' ? message.buttons.map((b) => b.id) : []);
const rowIds = (message: MessageContent) => (message.type === 'list' ? message.sections.flatMap((s) => s.rows.map((r) => r.id)) : []);
/** Attempts the customer's own taps or PAY started. */
const customerAttempts = (invoiceId: string) => db().selectFrom('payment_attempts').select('id').where('invoice_id', '=', invoiceId).where('initiated_by', '=', 'customer').execute();
const attempts = (invoiceId: string) => db().selectFrom('payment_attempts').selectAll().where('invoice_id', '=', invoiceId).orderBy('created_at').execute();

const localPhone = (msisdn: string) => `0${msisdn.slice(3)}`;

/** A merchant registered through the conversation; returns its phone and business name. */
async function merchant(name: string): Promise<{ phone: string; name: string }> {
  seq += 1;
  const phone = `2547221${String(seq).padStart(5, '0')}`;
  const business = `${name} ${seq}`;
  await say(phone, 'hi');
  await say(phone, business);
  return { phone, name: business };
}
/** An invoice the merchant makes and sends through the conversation (its own prompt starts); returns its id. */
async function invoiceFrom(m: { phone: string }, customer: string, amount: number, description: string): Promise<string> {
  await say(m.phone, `invoice ${localPhone(customer)} ${amount} ${description}`);
  await say(m.phone, 'yes');
  const row = await db()
    .selectFrom('invoices')
    .innerJoin('merchants', 'merchants.id', 'invoices.merchant_id')
    .select('invoices.id')
    .where('merchants.phone', '=', m.phone)
    .where('invoices.customer_phone', '=', customer)
    .orderBy('invoices.created_at', 'desc')
    .executeTakeFirstOrThrow();
  // Its prompt's push runs on the job queue; wait for it to start, or a later tap (after the
  // test moves the clock) could find a push that started at that later time, and so is young.
  await waitFor(async () => (await attempts(row.id))[0]?.push_started_at != null, 10_000, 'the invoice prompt pushed');
  return row.id;
}
function newCustomer(): string {
  seq += 1;
  return `2547331${String(seq).padStart(5, '0')}`;
}

/** Pays the invoice's pushed prompt as M-PESA does: a success callback to the URL its push carried. */
async function payByCallback(invoiceId: string, customer: string, amount: number): Promise<void> {
  await waitFor(async () => (await attempts(invoiceId)).some((a) => a.checkout_request_id !== null), 10_000, 'the invoice prompt pushed');
  const attempt = (await attempts(invoiceId)).find((a) => a.checkout_request_id !== null)!;
  const token = daraja
    .pushes()
    .map((r) => String(r.body.CallBackURL).split('/').at(-1)!)
    .find((candidate) => sha256Hex(candidate) === attempt.callback_token_hash);
  assert.ok(token, 'the push of this attempt reached the fake Daraja');
  const outcome = await f.deps.payments.handleCallback(token, {
    checkoutRequestId: attempt.checkout_request_id!,
    resultCode: 0,
    resultDesc: 'The service request is processed successfully.',
    amount,
    receipt: `RPB${String(seq).padStart(7, '0')}`,
    phone: customer,
  });
  assert.equal(outcome.status, 'applied');
  assert.equal((await db().selectFrom('invoices').select('status').where('id', '=', invoiceId).executeTakeFirstOrThrow()).status, 'paid');
}

describe("a Pay button names its own invoice: two merchants' INV-0001 to one customer", () => {
  test("a tap on Duka A's paid INV-0001 (its message's button or its template's) says it is paid; no prompt for Duka B's INV-0001", async () => {
    const customer = newCustomer();
    const a = await merchant('Duka A');
    const b = await merchant('Duka B');
    const paidA = await invoiceFrom(a, customer, 1500, 'flour');
    await payByCallback(paidA, customer, 1500);
    const unpaidB = await invoiceFrom(b, customer, 9000, 'cement');
    const numbers = await db().selectFrom('invoices').select('number').where('id', 'in', [paidA, unpaidB]).execute();
    assert.deepEqual(numbers.map((n) => n.number), [1, 1], 'both are INV-0001');

    // The invoice message A sent: its button and its template's quick reply name A's invoice.
    const sentA = await messageAbout(paidA, 'invoice');
    assert.deepEqual(buttonIds(sentA.message), [payButtonId(1, paidA)]);
    assert.equal(sentA.template?.buttonPayload, payButtonId(1, paidA));
    assert.match(payButtonId(1, paidA), /^pay:INV-0001~[0-9a-f]{8}$/);

    clock += 3 * 60_000; // B's own prompt is no longer young: a tap could start a new one
    assert.equal((await tap(customer, buttonIds(sentA.message)[0]!)).status, 200);
    assert.deepEqual(await lastReply(customer), texts.en.alreadyPaid(1));
    assert.equal((await tapTemplate(customer, sentA.template!.buttonPayload!)).status, 200);
    assert.deepEqual(await lastReply(customer), texts.en.alreadyPaid(1));
    assert.deepEqual(await customerAttempts(unpaidB), [], "no prompt for Duka B's KES 9,000 from Duka A's button");

    // B's own button still pays B's invoice.
    const sentB = await messageAbout(unpaidB, 'invoice');
    assert.deepEqual(buttonIds(sentB.message), [payButtonId(1, unpaidB)]);
    await tap(customer, buttonIds(sentB.message)[0]!);
    assert.equal((await customerAttempts(unpaidB)).length, 1);
    assert.match((await lastReply(customer)).body, /INV-0001[\s\S]*KES 9,000/);
  });

  test("a tap on Duka A's cancelled INV-0001 (or its reminder) says it was cancelled; no prompt for Duka B's INV-0001", async () => {
    const customer = newCustomer();
    const a = await merchant('Duka A');
    const b = await merchant('Duka B');
    const cancelledA = await invoiceFrom(a, customer, 1500, 'flour');
    clock += 3 * 60_000;
    await say(a.phone, 'remind 1');
    const reminderA = await messageAbout(cancelledA, 'reminder');
    assert.deepEqual(buttonIds(reminderA.message), [payButtonId(1, cancelledA)]);
    assert.equal(reminderA.template?.buttonPayload, payButtonId(1, cancelledA));
    await say(a.phone, 'cancel 1');
    const unpaidB = await invoiceFrom(b, customer, 9000, 'cement');

    clock += 3 * 60_000;
    for (const id of [buttonIds((await messageAbout(cancelledA, 'invoice')).message)[0]!, buttonIds(reminderA.message)[0]!]) {
      await tap(customer, id);
      assert.deepEqual(await lastReply(customer), texts.en.invoiceCancelledToCustomer(a.name, 1));
    }
    await tapTemplate(customer, reminderA.template!.buttonPayload!);
    assert.deepEqual(await lastReply(customer), texts.en.invoiceCancelledToCustomer(a.name, 1));
    assert.deepEqual(await customerAttempts(unpaidB), []);
    assert.deepEqual(await customerAttempts(cancelledA), []);
  });

  test('an old untagged button (pay:INV-0001) pays only when its number names one unpaid invoice and nothing settled; else the customer chooses', async () => {
    const customer = newCustomer();
    const a = await merchant('Duka A');
    const b = await merchant('Duka B');
    const paidA = await invoiceFrom(a, customer, 1500, 'flour');
    clock += 3 * 60_000;
    // Only A's INV-0001, unpaid: the old button works as it always did.
    await tap(customer, 'pay:INV-0001');
    assert.equal((await customerAttempts(paidA)).length, 1, 'a prompt for the one invoice it can mean');
    await payByCallback(paidA, customer, 1500);

    // A's is paid, B's is unpaid: the old button may be A's, so B's is shown, not prompted.
    const unpaidB = await invoiceFrom(b, customer, 9000, 'cement');
    clock += 3 * 60_000;
    await tap(customer, 'pay:INV-0001');
    assert.deepEqual(await customerAttempts(unpaidB), []);
    const shown = await lastReply(customer);
    assert.equal(shown.type, 'buttons');
    assert.match(shown.body, new RegExp(`${b.name}[\\s\\S]*KES 9,000`));
    assert.deepEqual(buttonIds(shown), [payButtonId(1, unpaidB)], "its Pay button names B's invoice");
    // Chosen from there, it is paid.
    await tap(customer, buttonIds(shown)[0]!);
    assert.equal((await customerAttempts(unpaidB)).length, 1);

    // Two unpaid INV-0001 (B's and a third merchant's): the list, each row naming its own invoice.
    const c = await merchant('Duka C');
    const unpaidC = await invoiceFrom(c, customer, 700, 'sugar');
    await tap(customer, 'pay:INV-0001');
    const list = await lastReply(customer);
    assert.equal(list.type, 'list');
    assert.deepEqual(new Set(rowIds(list)), new Set([payButtonId(1, unpaidB), payButtonId(1, unpaidC)]));
    assert.deepEqual(await customerAttempts(unpaidC), []);
  });
});

test("the list's rows are all tagged: with another merchant's paid INV-0001, a row for the unpaid INV-0001 pays it instead of showing the same list for good (found by a review of this change)", async () => {
  const customer = newCustomer();
  const a = await merchant('Duka A');
  const b = await merchant('Duka B');
  const paidA = await invoiceFrom(a, customer, 1500, 'flour');
  clock += 3 * 60_000;
  await payByCallback(paidA, customer, 1500);
  const b1 = await invoiceFrom(b, customer, 9000, 'cement');
  clock += 3 * 60_000;
  await invoiceFrom(b, customer, 700, 'sugar');
  clock += 3 * 60_000;
  await say(customer, 'pay');
  const list = await lastReply(customer);
  assert.equal(list.type, 'list');
  const row = rowIds(list).find((id) => id.startsWith('pay:INV-0001'));
  assert.equal(row, payButtonId(1, b1));
  await tap(customer, row!);
  assert.equal((await customerAttempts(b1)).length, 1, "B's INV-0001 is prompted");
  assert.deepEqual(await customerAttempts(paidA), [], "no prompt for A's paid invoice");
});

describe('pay N (typed or tapped) for an invoice that is not unpaid', () => {
  /** A merchant (seeded) with INV-0001 paid and INV-0002, INV-0003 unpaid to one customer. */
  async function seeded(unpaid: number) {
    seq += 1;
    const customer = newCustomer();
    const { id: merchantId } = await db().insertInto('merchants').values({ phone: `2547441${String(seq).padStart(5, '0')}`, business_name: `Duka ${seq}` }).returning('id').executeTakeFirstOrThrow();
    const ids: string[] = [];
    for (let number = 1; number <= 1 + unpaid; number += 1) {
      const row = await db()
        .insertInto('invoices')
        .values({
          merchant_id: merchantId,
          number,
          customer_phone: customer,
          amount: String(1000 * number),
          description: `item ${number}`,
          status: number === 1 ? 'paid' : 'sent',
          paid_at: number === 1 ? now() : null,
          due_date: '2026-12-31',
          created_at: new Date(clock - 60_000 * (10 - number)),
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      ids.push(row.id);
    }
    return { customer, ids };
  }

  test('a paid one is said to be paid; a number of none lists the unpaid ones (none unpaid: nothing to pay); no prompt either way', async () => {
    const { customer, ids } = await seeded(2);
    for (const asked of ['pay 1', 'PAY INV-0001', 'lipa 1']) {
      await say(customer, asked);
      assert.deepEqual(await lastReply(customer), texts.en.alreadyPaid(1), asked);
    }
    // The paid invoice's own button, tagged or from before the tag.
    for (const id of ['pay:INV-0001', payButtonId(1, ids[0]!)]) {
      await tap(customer, id);
      assert.deepEqual(await lastReply(customer), texts.en.alreadyPaid(1), id);
    }
    for (const asked of ['pay 9', 'pay INV-0042']) {
      await say(customer, asked);
      const list = await lastReply(customer);
      assert.equal(list.type, 'list', `${asked}: ${list.body}`);
      assert.deepEqual(rowIds(list), [payButtonId(3, ids[2]!), payButtonId(2, ids[1]!)]);
    }
    for (const id of ids) assert.deepEqual(await customerAttempts(id), []);

    const settled = await seeded(0);
    await say(settled.customer, 'pay 9');
    assert.deepEqual(await lastReply(settled.customer), texts.en.customerInvoices([]));
    await say(settled.customer, 'pay 1');
    assert.deepEqual(await lastReply(settled.customer), texts.en.alreadyPaid(1));
  });
});

describe('remind N: the merchant is told whether a new prompt went', () => {
  test('under 2 minutes after the invoice prompt (pending, or a push with no clear answer): reminder sent, earlier prompt still on the phone; later: a new prompt', async () => {
    const customer = newCustomer();
    const m = await merchant('Duka R');
    const invoiceId = await invoiceFrom(m, customer, 1500, 'flour');

    clock += 30_000;
    await say(m.phone, 'remind 1');
    assert.deepEqual(await lastReply(m.phone), texts.en.reminderSent(1, customer, 'pending'));
    assert.equal((await attempts(invoiceId)).length, 1, 'no new prompt');
    assert.equal((await messageAbout(invoiceId, 'reminder')).message.type, 'buttons', 'the reminder itself went');

    clock += 3 * 60_000;
    await say(m.phone, 'remind 1');
    assert.deepEqual(await lastReply(m.phone), texts.en.reminderSent(1, customer));
    assert.equal((await attempts(invoiceId)).length, 2, 'a new prompt');
    assert.equal((await attempts(invoiceId))[1]!.initiated_by, 'merchant_remind');

    // A push Daraja never answered: the prompt may be on the phone for 2 minutes from it.
    // Its push answered first (the fake's next answer must be the new invoice's).
    await waitFor(async () => (await attempts(invoiceId))[1]?.checkout_request_id != null, 10_000, 'the reminder prompt pushed');
    daraja.queuePush({ kind: 'hang' });
    const second = await invoiceFrom(m, customer, 2500, 'sugar');
    await waitFor(async () => (await attempts(second))[0]?.status === 'failed', 10_000, 'the push timed out');
    assert.equal((await attempts(second))[0]!.push_unclear, true);
    clock += 30_000;
    await say(m.phone, 'remind 2');
    assert.deepEqual(await lastReply(m.phone), texts.en.reminderSent(2, customer, 'pending'));
    assert.equal((await attempts(second)).length, 1);

    // In Kiswahili too.
    await say(m.phone, 'lugha sw');
    await say(m.phone, 'kumbusha 2');
    assert.deepEqual(await lastReply(m.phone), texts.sw.reminderSent(2, customer, 'pending'));
  });
});

describe('a push and a cancel of its invoice at the same moment', () => {
  test('the claim waits for the cancel being committed, then sends no prompt (Postgres only: needs two connections; PGlite has one)', async (t) => {
    if (f.database.kind !== 'postgres') {
      t.skip('needs two connections (TEST_DATABASE_URL)');
      return;
    }
    seq += 1;
    const customer = newCustomer();
    const { id: merchantId } = await db().insertInto('merchants').values({ phone: `2547451${String(seq).padStart(5, '0')}`, business_name: `Duka ${seq}` }).returning('id').executeTakeFirstOrThrow();
    const invoice = await db()
      .insertInto('invoices')
      .values({ merchant_id: merchantId, number: 1, customer_phone: customer, amount: '1500', description: 'flour', status: 'sent', due_date: '2026-12-31' })
      .returning('id')
      .executeTakeFirstOrThrow();
    // An attempt whose push job is about to run (not pushed yet).
    const attempt = await db()
      .insertInto('payment_attempts')
      .values({ invoice_id: invoice.id, amount: '1500', phone: customer, callback_token_hash: sha256Hex(`race-${seq}`), initiated_by: 'invoice_sent', created_at: now() })
      .returning('id')
      .executeTakeFirstOrThrow();

    // The merchant's cancel, as the conversation runs it, stopped between its statements: the
    // invoice locked and cancelled, the attempts not yet pushed not yet expired.
    const canceller = await f.database.handle.pool!.connect();
    let pushing: Promise<string> | undefined;
    let pushed: string | undefined;
    try {
      await canceller.query('begin');
      await canceller.query('select id from invoices where id = $1 for update', [invoice.id]);
      await canceller.query(`update invoices set status = 'cancelled', cancelled_at = now(), updated_at = now() where id = $1`, [invoice.id]);
      pushing = f.deps.payments.push(attempt.id).then((result) => (pushed = result));
      // The push reaches the invoice and waits for the cancel (before the fix: claims at once).
      await waitFor(
        async () => {
          if (pushed !== undefined) return true;
          const { rows } = await canceller.query<{ n: string }>(`select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`);
          return Number(rows[0]!.n) > 0;
        },
        5_000,
        'the push waits for the cancel',
      );
      await canceller.query(
        `update payment_attempts set status = 'expired', result_desc = 'invoice cancelled', completed_at = now(), updated_at = now()
         where invoice_id = $1 and status = 'pending' and push_started_at is null`,
        [invoice.id],
      );
      await canceller.query('commit');
    } finally {
      canceller.release();
    }
    assert.equal(await pushing, 'not_pending', 'no prompt for a cancelled invoice');
    assert.equal(daraja.pushes().filter((r) => r.body.PhoneNumber === customer).length, 0, 'nothing reached the phone');
    const row = (await attempts(invoice.id))[0]!;
    assert.equal(row.status, 'expired');
    assert.equal(row.result_desc, 'invoice cancelled');
    assert.equal(row.push_started_at, null);
  });
});
