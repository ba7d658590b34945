/**
 * Round trips a group of STK callbacks makes while it holds its locks (src/payments/service.ts
 * applyResults): the attempts, the invoices marked paid, the audit events and the receipts go
 * to Postgres in one statement (the outbox's AlongsideWrite), not four. Under load each round
 * trip waits for the event loop (about 10 ms at 256 clients in bench/callbacks.ts), so a group's
 * locks were held for ten of them. Also the outbox's side of it: writes alongside the rows,
 * counted, with and without rows, and their names checked. The statements are captured
 * through Kysely's log; both databases.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Kysely, PostgresDialect, sql } from 'kysely';
import type { Database } from '../src/db/schema.js';
import { createOutbox } from '../src/delivery/outbox.js';
import { createPayments } from '../src/payments/service.js';
import type { DarajaClient } from '../src/providers/mpesa/client.js';
import { sha256Hex } from '../src/security.js';
import { startChannelFixture, textDrafts, type ChannelFixture } from './helpers/channel.js';

let f: ChannelFixture;
before(async () => {
  f = await startChannelFixture({ env: { DELIVERY_SAFETY_NET_SECONDS: '3600', MPESA_CALLBACK_URL: 'https://invoiceiq.example/payments/stk/callback' } });
});
after(() => f.close());

/** A Kysely over the fixture's pool that keeps the text of every statement it sends, BEGIN and COMMIT included. */
function loggedDb(): { db: Kysely<Database>; statements: string[] } {
  const statements: string[] = [];
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool: f.database.handle.pool }),
    log: (event) => {
      if (event.level === 'query') statements.push(event.query.sql.replace(/\s+/g, ' ').trim());
    },
  });
  return { db, statements };
}

const noDaraja: DarajaClient = { configured: true, stkPush: () => Promise.reject(new Error('not used')), stkQuery: async () => ({ state: 'pending' }) };

test('a group of success callbacks writes its attempts, invoices, events and receipts in one statement: 7 statements from BEGIN to COMMIT (were 10)', async () => {
  const base = f.database.handle.db;
  const merchant = '254745800001';
  const { id: merchantId } = await base.insertInto('merchants').values({ phone: merchant, business_name: 'Round Trip Duka' }).returning('id').executeTakeFirstOrThrow();
  const seeded = [];
  for (let i = 1; i <= 3; i += 1) {
    const customer = `25474580010${i}`;
    const invoice = await base
      .insertInto('invoices')
      .values({ merchant_id: merchantId, number: i, customer_phone: customer, amount: '250', description: 'sugar', status: 'sent', due_date: '2026-12-31' })
      .returning('id')
      .executeTakeFirstOrThrow();
    const token = `round-trip-token-${i}-0123456789abcdefghijklmnop`;
    const checkout = `ws_CO_round_${i}`;
    await base
      .insertInto('payment_attempts')
      .values({ invoice_id: invoice.id, checkout_request_id: checkout, merchant_request_id: `mr_${checkout}`, amount: '250', phone: customer, callback_token_hash: sha256Hex(token), push_started_at: new Date() })
      .execute();
    seeded.push({ invoiceId: invoice.id, token, checkout, customer });
  }

  const { db, statements } = loggedDb();
  const outbox = createOutbox({ db, jobs: f.deps.jobs, whatsapp: f.deps.whatsapp, sms: f.deps.sms, config: f.deps.config, metrics: f.deps.metrics, logger: f.deps.logger });
  const payments = createPayments({ db, jobs: f.deps.jobs, outbox, daraja: noDaraja, config: f.deps.config, metrics: f.deps.metrics, logger: f.deps.logger });
  const outcomes = await Promise.all(
    seeded.map((s, i) =>
      payments.handleCallback(s.token, {
        checkoutRequestId: s.checkout,
        resultCode: 0,
        resultDesc: 'The service request is processed successfully.',
        amount: 250,
        receipt: `RTRIP0000${i}`,
        phone: s.customer,
      }),
    ),
  );
  assert.deepEqual(
    outcomes.map((o) => o.status),
    ['applied', 'applied', 'applied'],
  );
  await outbox.idle();

  // Each callback transaction (the group's, or one per callback if they did not meet), BEGIN to COMMIT.
  const transactions: string[][] = [];
  let open: string[] | undefined;
  for (const statement of statements) {
    if (/^begin/i.test(statement)) open = [statement];
    else if (open !== undefined) {
      open.push(statement);
      if (/^commit/i.test(statement)) {
        if (open.some((s) => /insert into "?inbound_events"?/.test(s))) transactions.push(open);
        open = undefined;
      }
    }
  }
  assert.ok(transactions.length >= 1, `no callback transaction seen among ${statements.length} statements`);
  for (const trx of transactions) {
    assert.equal(trx.length, 7, `statements of one callback transaction:\n${trx.map((s) => s.slice(0, 100)).join('\n')}`);
    const writes = trx.filter((s) => /update payment_attempts|update invoices|insert into invoice_events|insert into outbound_messages/.test(s));
    assert.equal(writes.length, 1, 'the attempts, invoices, events and messages are one statement');
    for (const part of ['update payment_attempts', 'update invoices', 'insert into invoice_events', 'insert into outbound_messages']) assert.match(writes[0]!, new RegExp(part));
  }

  // And it did all it did before: paid once each, the attempts succeeded, one "paid" event each, both receipts.
  for (const [i, s] of seeded.entries()) {
    const invoice = await base.selectFrom('invoices').select(['status', 'mpesa_receipt']).where('id', '=', s.invoiceId).executeTakeFirstOrThrow();
    assert.deepEqual(invoice, { status: 'paid', mpesa_receipt: `RTRIP0000${i}` });
    const attempt = await base.selectFrom('payment_attempts').select(['status', 'mpesa_receipt', 'result_code', 'completed_at']).where('invoice_id', '=', s.invoiceId).executeTakeFirstOrThrow();
    assert.equal(attempt.status, 'succeeded');
    assert.equal(attempt.mpesa_receipt, `RTRIP0000${i}`);
    assert.equal(attempt.result_code, 0);
    assert.ok(attempt.completed_at !== null);
    const events = await base.selectFrom('invoice_events').select(['type', 'actor', 'data']).where('invoice_id', '=', s.invoiceId).execute();
    assert.deepEqual(
      events.filter((e) => e.type === 'paid').map((e) => [e.actor, (e.data as { receipt: string }).receipt]),
      [['mpesa', `RTRIP0000${i}`]],
      'the event data is stored as an object, as before',
    );
    const receipts = await base.selectFrom('outbound_messages').select(['recipient', 'status']).where('invoice_id', '=', s.invoiceId).where('kind', '=', 'receipt').execute();
    assert.deepEqual(receipts.map((r) => r.recipient).sort(), [merchant, s.customer].sort());
    assert.ok(receipts.every((r) => r.status === 'sent'));
  }
});

test("writes alongside the outbox's rows: counted with rows and without, run once, hiding no table or WITH query of the outbox's, and a malformed name refused before anything is written", async () => {
  const db = f.database.handle.db;
  await sql`create table if not exists alongside_probe (id int primary key, note text)`.execute(db);
  await sql`insert into alongside_probe values (1, 'a'), (2, 'b'), (3, 'c')`.execute(db);
  const to = '254745800099';
  await f.chatting(to);

  const withRows = await db.transaction().execute((trx) =>
    f.deps.outbox.enqueueClaimed(trx, textDrafts(to, 2), [
      { name: 'probe_touched', counted: true, write: sql`update alongside_probe set note = note || '+' where id <= 2 returning id` },
      { name: 'probe_added', write: sql`insert into alongside_probe values (4, 'd')` },
    ]),
  );
  assert.equal(withRows.ids.length, 2);
  assert.deepEqual(withRows.counts, { probe_touched: 2 });
  f.deps.outbox.dispatchWritten(withRows);
  await f.deps.outbox.idle();

  const withoutRows = await db.transaction().execute((trx) =>
    f.deps.outbox.enqueueClaimed(trx, [], [{ name: 'probe_touched', counted: true, write: sql`update alongside_probe set note = note || '!' where id = 3 returning id` }]),
  );
  assert.deepEqual(withoutRows.ids, []);
  assert.deepEqual(withoutRows.counts, { probe_touched: 1 });

  const { rows } = await sql<{ id: number; note: string }>`select id, note from alongside_probe order by id`.execute(db);
  assert.deepEqual(rows, [
    { id: 1, note: 'a+' },
    { id: 2, note: 'b+' },
    { id: 3, note: 'c!' },
    { id: 4, note: 'd' },
  ]);

  // Named like a table the outbox's statement reads, or like its own WITH queries: hides none of them.
  const named = await db.transaction().execute((trx) =>
    f.deps.outbox.enqueueClaimed(trx, textDrafts(to, 1), [
      { name: 'conversations', counted: true, write: sql`update alongside_probe set note = note || 'c' where id = 4 returning id` },
      { name: 'outbound_messages', write: sql`insert into alongside_probe values (5, 'e')` },
      { name: 'jobs', counted: true, write: sql`update alongside_probe set note = note || 'j' where id = 5 returning id` },
    ]),
  );
  assert.equal(named.ids.length, 1);
  assert.equal(named.claimed.length + named.queued.length, 1, 'the row was written and claimed or queued as usual');
  // The update of row 5 ran on the snapshot before the insert beside it: nothing to update.
  assert.deepEqual(named.counts, { conversations: 1, jobs: 0 });
  f.deps.outbox.dispatchWritten(named);
  await f.deps.outbox.idle();
  const sentTo = await db.selectFrom('outbound_messages').select('status').where('id', '=', named.ids[0]!).executeTakeFirstOrThrow();
  assert.equal(sentTo.status, 'sent');

  const before = await f.count('outbound_messages');
  for (const name of ['Probe', 'probe; drop table alongside_probe', '', '_probe', 'a'.repeat(42)]) {
    await assert.rejects(
      db.transaction().execute((trx) => f.deps.outbox.enqueueClaimed(trx, textDrafts(to, 1), [{ name, write: sql`update alongside_probe set note = 'x'` }])),
      /alongside write: the name .* is not allowed/,
      name,
    );
  }
  assert.equal(await f.count('outbound_messages'), before);
  const { rows: after } = await sql<{ n: number }>`select count(*)::int as n from alongside_probe where note = 'x'`.execute(db);
  assert.equal(after[0]!.n, 0);
});
