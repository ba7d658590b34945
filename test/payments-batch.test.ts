/**
 * Group commit of STK callbacks (src/payments/service.ts applyCallbacks, planResults): callbacks
 * arriving together share one transaction, and each still gets exactly the answer and the
 * effect it would get alone: forged ones refused, doubled ones applied once, two payments of
 * one invoice paid once, and a callback whose effects fail costs the others nothing. Real
 * route, attempts seeded in SQL with real token hashes, both databases.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { sha256Hex } from '../src/security.js';
import { callbackSuite, declinedBody, paidBody, whileRowsHeld, type SeededAttempt } from './helpers/callback-groups.js';
import { startChannelFixture, type ChannelFixture } from './helpers/channel.js';

let f: ChannelFixture;
before(async () => {
  // A callback kept for a retry stays kept: no retry worker races what the tests check.
  f = await startChannelFixture({ env: { MPESA_CALLBACK_URL: 'https://invoiceiq.example/payments/stk/callback' }, idleQueues: ['retry-stk-callback'] });
});
after(async () => {
  await f.close();
});

let merchantSeq = 0;
type Seeded = SeededAttempt;

/** One merchant with `n` sent invoices of KES 100, each with a pending attempt whose token is known. */
async function seed(n: number, options: { attemptsPerInvoice?: number } = {}): Promise<{ merchant: string; attempts: Seeded[] }> {
  merchantSeq += 1;
  const db = f.database.handle.db;
  const merchant = `2547550${String(merchantSeq).padStart(5, '0')}`;
  const { id: merchantId } = await db.insertInto('merchants').values({ phone: merchant, business_name: `Group Shop ${merchantSeq}` }).returning('id').executeTakeFirstOrThrow();
  const attempts: Seeded[] = [];
  for (let i = 1; i <= n; i += 1) {
    const customer = `2547660${String(merchantSeq).padStart(2, '0')}${String(i).padStart(3, '0')}`;
    const invoice = await db
      .insertInto('invoices')
      .values({ merchant_id: merchantId, number: i, customer_phone: customer, amount: '100', description: 'group', status: 'sent', due_date: '2026-12-31' })
      .returning('id')
      .executeTakeFirstOrThrow();
    for (let k = 1; k <= (options.attemptsPerInvoice ?? 1); k += 1) {
      const token = `group-${merchantSeq}-${i}-${k}-token-0123456789abcdef`;
      const checkout = `ws_CO_group_${merchantSeq}_${i}_${k}`;
      const attempt = await db
        .insertInto('payment_attempts')
        .values({ invoice_id: invoice.id, checkout_request_id: checkout, merchant_request_id: `mr_${checkout}`, amount: '100', phone: customer, callback_token_hash: sha256Hex(token), push_started_at: new Date() })
        .returning('id')
        .executeTakeFirstOrThrow();
      attempts.push({ token, checkout, invoiceId: invoice.id, attemptId: attempt.id, customer });
    }
  }
  return { merchant, attempts };
}

const { callback, groups, invoice, attempt } = callbackSuite(() => f);
const paid = paidBody;
const declined = declinedBody;
async function eventCount(invoiceIds: readonly string[], type: string) {
  const row = await f.database.handle.db
    .selectFrom('invoice_events')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('invoice_id', 'in', invoiceIds)
    .where('type', '=', type)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}
async function outboxTo(phone: string) {
  return f.database.handle.db.selectFrom('outbound_messages').select(['kind', 'content']).where('recipient', '=', phone).orderBy('created_at').execute();
}

describe('STK callbacks in groups', () => {
  test('forty callbacks at once: fewer transactions than callbacks, every invoice paid once with its own receipt', async () => {
    const { merchant, attempts } = await seed(40);
    const before = await groups();
    const answers = await Promise.all(attempts.map((a, i) => callback(a.token, paid(a, `RGRPA${String(i).padStart(5, '0')}`))));
    assert.deepEqual(
      answers.map((r) => r.status),
      attempts.map(() => 200),
    );
    const after = await groups();
    assert.equal(after.callbacks - before.callbacks, 40);
    assert.ok(after.transactions - before.transactions < 40, `40 callbacks took ${after.transactions - before.transactions} transactions`);
    for (const [i, a] of attempts.entries()) {
      assert.deepEqual(await invoice(a.invoiceId), { status: 'paid', mpesa_receipt: `RGRPA${String(i).padStart(5, '0')}` });
      assert.equal((await attempt(a.attemptId)).status, 'succeeded');
      assert.deepEqual((await outboxTo(a.customer)).map((m) => m.kind), ['receipt']);
    }
    assert.equal(await eventCount(attempts.map((a) => a.invoiceId), 'paid'), 40);
    assert.equal((await outboxTo(merchant)).filter((m) => m.kind === 'receipt').length, 40);
  });

  test('one group, every kind of callback: each gets the answer and the effect it would get alone', async () => {
    const { merchant, attempts } = await seed(5);
    const [good, twice, fail, short, mismatched] = attempts as [Seeded, Seeded, Seeded, Seeded, Seeded];
    const answers = await Promise.all([
      callback(good.token, paid(good, 'RGRPB00001')),
      callback(twice.token, paid(twice, 'RGRPB00002')),
      callback(twice.token, paid(twice, 'RGRPB00002')),
      callback(fail.token, declined(fail)),
      callback(short.token, paid(short, 'RGRPB00004', 10)),
      callback('nobody-knows-this-token-000000000000000', paid(good, 'RGRPB00009')),
      callback(mismatched.token, paid({ ...mismatched, checkout: 'ws_CO_someone_else' }, 'RGRPB00005')),
    ]);
    assert.deepEqual(
      answers.map((r) => r.status),
      [200, 200, 200, 200, 200, 404, 403],
    );
    assert.equal((await invoice(good.invoiceId)).status, 'paid');
    assert.equal((await invoice(twice.invoiceId)).status, 'paid');
    assert.equal(await eventCount([twice.invoiceId], 'paid'), 1, 'the same callback twice in flight: one effect');
    assert.deepEqual((await outboxTo(twice.customer)).map((m) => m.kind), ['receipt']);
    assert.equal((await attempt(fail.attemptId)).status, 'failed');
    assert.equal((await invoice(fail.invoiceId)).status, 'sent');
    assert.deepEqual((await outboxTo(fail.customer)).map((m) => m.kind), ['notice']);
    const review = await attempt(short.attemptId);
    assert.equal(review.status, 'failed');
    assert.match(review.review_reason ?? '', /^amount_mismatch: paid 10 receipt RGRPB00004$/);
    assert.equal((await invoice(short.invoiceId)).status, 'sent');
    assert.equal((await attempt(mismatched.attemptId)).status, 'pending', 'a mismatched CheckoutRequestID changes nothing');
    assert.equal((await invoice(mismatched.invoiceId)).status, 'sent');
    // Receipts for good and twice, a failure notice and a review notice.
    assert.deepEqual((await outboxTo(merchant)).map((m) => m.kind).sort(), ['notice', 'notice', 'receipt', 'receipt']);
  });

  test('two prompts of one invoice paid in the same group: paid once, the other kept for a refund', async () => {
    const { attempts } = await seed(1, { attemptsPerInvoice: 2 });
    const [first, second] = attempts as [Seeded, Seeded];
    const answers = await Promise.all([callback(first.token, paid(first, 'RGRPC00001')), callback(second.token, paid(second, 'RGRPC00002'))]);
    assert.deepEqual(
      answers.map((r) => r.status),
      [200, 200],
    );
    const rows = [await attempt(first.attemptId), await attempt(second.attemptId)];
    assert.deepEqual(rows.map((r) => r.status).sort(), ['failed', 'succeeded']);
    const winner = rows.find((r) => r.status === 'succeeded')!;
    const loser = rows.find((r) => r.status === 'failed')!;
    assert.deepEqual(await invoice(first.invoiceId), { status: 'paid', mpesa_receipt: winner.mpesa_receipt });
    assert.equal(loser.review_reason, `paid_twice: receipt ${loser.mpesa_receipt}`);
    assert.equal(await eventCount([first.invoiceId], 'paid'), 1);
    assert.equal(await eventCount([first.invoiceId], 'duplicate_payment'), 1);
  });

  test('the same receipt sent for two attempts at once pays only one of them', async () => {
    const { attempts } = await seed(2);
    const [a, b] = attempts as [Seeded, Seeded];
    const answers = await Promise.all([callback(a.token, paid(a, 'RGRPD00001')), callback(b.token, paid(b, 'RGRPD00001'))]);
    assert.deepEqual(
      answers.map((r) => r.status),
      [200, 200],
    );
    const statuses = [(await invoice(a.invoiceId)).status, (await invoice(b.invoiceId)).status].sort();
    assert.deepEqual(statuses, ['paid', 'sent']);
  });

  test('a callback whose effects fail costs the rest of its group nothing: it is kept for a retry, and sent again it pays', async () => {
    const { attempts } = await seed(6);
    const db = f.database.handle.db;
    // A real failure inside the transaction: the database refuses this one receipt's event.
    await sql`create function refuse_receipt() returns trigger language plpgsql as $$
      begin
        if new.data::jsonb ->> 'receipt' = 'RGRPEBOOM' then raise exception 'refused for the test'; end if;
        return new;
      end $$`.execute(db);
    await sql`create trigger refuse_receipt before insert on invoice_events for each row execute function refuse_receipt()`.execute(db);
    const receipt = (i: number) => (i === 2 ? 'RGRPEBOOM' : `RGRPE0000${i}`);
    const bad = attempts[2]!;
    try {
      const answers = await Promise.all(attempts.map((a, i) => callback(a.token, paid(a, receipt(i)))));
      // Kept (test/payments-kept-callbacks.test.ts): accepted, so Safaricom need not send it again.
      assert.deepEqual(
        answers.map((r) => r.status),
        [200, 200, 200, 200, 200, 200],
      );
      for (const [i, a] of attempts.entries()) assert.equal((await invoice(a.invoiceId)).status, i === 2 ? 'sent' : 'paid');
      const kept = await db.selectFrom('inbound_events').select('status').where('source', '=', 'mpesa_callback').where('external_key', '=', `${bad.checkout}:0:RGRPEBOOM:100`).executeTakeFirstOrThrow();
      assert.equal(kept.status, 'retrying');
    } finally {
      await sql`drop trigger refuse_receipt on invoice_events`.execute(db);
      await sql`drop function refuse_receipt()`.execute(db);
    }
    // Sent again, it pays at once (its kept record is taken over), once.
    assert.equal((await callback(bad.token, paid(bad, 'RGRPEBOOM'))).status, 200);
    assert.deepEqual(await invoice(bad.invoiceId), { status: 'paid', mpesa_receipt: 'RGRPEBOOM' });
    assert.equal(await eventCount([bad.invoiceId], 'paid'), 1);
    const taken = await db.selectFrom('inbound_events').select(['status', 'attempts']).where('source', '=', 'mpesa_callback').where('external_key', '=', `${bad.checkout}:0:RGRPEBOOM:100`).executeTakeFirstOrThrow();
    assert.deepEqual(taken, { status: 'processed', attempts: 2 });
  });

  test('two groups stuck on locks another connection holds do not hold up the next callback: it is paid after about half a second (Postgres only)', async (t) => {
    if (f.database.kind !== 'postgres') {
      t.skip('needs two connections (TEST_DATABASE_URL); the embedded database runs one transaction at a time');
      return;
    }
    const { attempts } = await seed(3);
    const [first, second, third] = attempts as [Seeded, Seeded, Seeded];
    // Another machine (a reconciliation, say) holds the first two attempts' rows.
    let stuck: Array<Promise<Response>> = [];
    await whileRowsHeld(f, 'payment_attempts', [first.attemptId, second.attemptId], async () => {
      // One group each (a group starts on the next turn of the event loop with what has come).
      stuck.push(callback(first.token, paid(first, 'RGRPSTUCK1')));
      await new Promise((resolve) => setTimeout(resolve, 50));
      stuck.push(callback(second.token, paid(second, 'RGRPSTUCK2')));
      await new Promise((resolve) => setTimeout(resolve, 50));
      const started = performance.now();
      const answer = await Promise.race([callback(third.token, paid(third, 'RGRPFREE01')), new Promise<null>((resolve) => setTimeout(resolve, 5000, null))]);
      const waited = performance.now() - started;
      assert.notEqual(answer, null, 'the free callback was still waiting after 5 s');
      assert.equal(answer!.status, 200);
      assert.deepEqual(await invoice(third.invoiceId), { status: 'paid', mpesa_receipt: 'RGRPFREE01' });
      // Both slots were taken by the stuck groups: it waited for the spare one, no longer.
      assert.ok(waited >= 300 && waited < 5000, `the free callback took ${Math.round(waited)} ms`);
      assert.deepEqual(await invoice(first.invoiceId), { status: 'sent', mpesa_receipt: null });
    });
    // Released, the stuck ones go through too.
    assert.deepEqual((await Promise.all(stuck)).map((r) => r.status), [200, 200]);
    assert.deepEqual(await invoice(first.invoiceId), { status: 'paid', mpesa_receipt: 'RGRPSTUCK1' });
    assert.deepEqual(await invoice(second.invoiceId), { status: 'paid', mpesa_receipt: 'RGRPSTUCK2' });
    stuck = [];
  });
});
