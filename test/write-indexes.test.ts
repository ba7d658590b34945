/**
 * The indexes migration 0017 narrowed or dropped (fewer entries written for each payment and
 * each message) are not needed by any read: on a busy service's tables (thousands of invoices,
 * most paid; thousands of messages, most sent; statistics current), no statement of a
 * merchant's or a customer's conversation turn reads the invoices whole, the customer's reads go
 * through the index of unpaid invoices, and the sweep of stuck messages reads the unsent rows
 * only. The statements are the ones the code runs (captured through Kysely's log), explained.
 * Both databases (PGlite runs Postgres's planner too).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sql, type CompiledQuery } from 'kysely';
import { createConversationHandler } from '../src/conversation/handler.js';
import type { ConversationMessage } from '../src/conversation/port.js';
import { createOutbox } from '../src/delivery/outbox.js';
import { createWhatsAppInbound } from '../src/inbound/whatsapp.js';
import { WebhookPayload } from '../src/providers/whatsapp/schemas.js';
import { envelope, textMessage } from './fixtures/whatsapp.js';
import { startChannelFixture, type ChannelFixture } from './helpers/channel.js';
import { readsOf as readsOfPlan, recordingDb } from './helpers/plans.js';

let f: ChannelFixture;
before(async () => {
  f = await startChannelFixture({ env: { DELIVERY_SAFETY_NET_SECONDS: '3600' } });
});
after(() => f.close());

/** How each scan of `table` in the statement's plan reads it: an index's name, or 'seq' for the whole table. */
const readsOf = (query: Pick<CompiledQuery, 'sql' | 'parameters'>, table: string) => readsOfPlan(f.database.handle.pool, query, (n) => n['Relation Name'] === table);

const MERCHANT = '254711000001';
const CUSTOMER = '254722000001';

test('no conversation turn reads the invoices whole; a customer\'s reads use the index of unpaid invoices', async () => {
  const db = f.database.handle.db;
  // A busy service: 200 merchants, 20,000 invoices to 5,000 customers, most paid.
  await sql`
    insert into merchants (phone, business_name)
    select '2547110' || lpad(m::text, 5, '0'), 'Shop ' || m from generate_series(1, 200) as m`.execute(db);
  await sql`
    with ids as (select array_agg(id order by phone) as a from merchants)
    insert into invoices (merchant_id, number, customer_phone, amount, description, status, due_date, created_at, sent_at, paid_at)
    select ids.a[1 + i % 200], i, '2547220' || lpad((1 + i % 5000)::text, 5, '0'), 100 + i % 900, 'goods',
      case when i % 20 = 0 then 'sent' when i % 97 = 0 then 'cancelled' else 'paid' end,
      current_date + (i % 30) - 15, now() - make_interval(hours => 20000 - i), now() - make_interval(hours => 20000 - i),
      case when i % 20 = 0 or i % 97 = 0 then null else now() - make_interval(hours => 19990 - i) end
    from generate_series(1, 20000) as i, ids`.execute(db);
  await sql`analyze merchants`.execute(db);
  await sql`analyze invoices`.execute(db);

  const { db: logged, captured } = recordingDb(f.database.handle.pool);
  const handler = createConversationHandler();
  let n = 0;
  const say = async (phone: string, text: string) => {
    n += 1;
    const message: ConversationMessage = { phone, messageId: `wamid.plans.${n}`, receivedAt: new Date(), profileName: undefined, input: { kind: 'text', text } };
    await logged.transaction().execute((trx) => handler(trx, message));
  };
  for (const text of ['hi', 'list', 'summary', 'status 200', 'new']) await say(MERCHANT, text);
  for (const text of ['hi', 'pay', 'list']) await say(CUSTOMER, text);

  const onInvoices = captured.filter((q) => /\binvoices\b/.test(q.sql) && !/^\s*(insert|update|delete)\b/i.test(q.sql));
  assert.ok(onInvoices.length >= 5, `too few reads of invoices seen (${onInvoices.length}): the turns did not run as meant`);
  const reads = await Promise.all(onInvoices.map(async (q) => ({ sql: q.sql.replace(/\s+/g, ' '), reads: await readsOf(q, 'invoices') })));
  const whole = reads.filter((r) => r.reads.includes('seq'));
  assert.deepEqual(whole, [], 'statements reading every invoice');
  // The reads that look invoices up by the customer's number (not those that only show it).
  const customerReads = reads.filter((r) => /customer_phone"? = /.test(r.sql));
  assert.ok(customerReads.length >= 2, `too few reads by the customer's number seen (${customerReads.length})`);
  for (const read of customerReads) assert.ok(read.reads.includes('invoices_customer_unpaid_idx'), JSON.stringify(read));
});

test("an inbound message's own statement (events, conversation rows, the senders' facts) looks the sender's unpaid invoices up, not every unpaid invoice", async () => {
  const { db: logged, captured } = recordingDb(f.database.handle.pool);
  const inbound = createWhatsAppInbound({
    db: logged,
    jobs: f.deps.jobs,
    outbox: f.deps.outbox,
    conversation: createConversationHandler(),
    metrics: f.deps.metrics,
    logger: f.deps.logger,
    maxAttempts: 3,
  });
  // The invoices of the test above are there (20,000, 1,000 of them unpaid).
  await inbound.handlePayload(WebhookPayload.parse(envelope({ messages: [textMessage(CUSTOMER, 'hi'), textMessage('254722000002', 'hi')] })));
  const statement = captured.find((q) => /is_customer/.test(q.sql) && /insert into conversations/.test(q.sql));
  assert.ok(statement !== undefined, 'the inbound statement with the facts was not seen');
  assert.deepEqual(await readsOf(statement, 'invoices'), ['invoices_customer_unpaid_idx']);
});

test('the sweep of stuck messages reads the unsent messages only, not every message', async () => {
  const db = f.database.handle.db;
  await sql`
    insert into outbound_messages (recipient, kind, content, status, channel, created_at, updated_at)
    select '2547' || lpad((i % 3000)::text, 8, '0'), 'reply', '{"message":{"type":"text","body":"sent"}}'::jsonb,
      case when i % 500 = 0 then 'queued' else 'sent' end, 'whatsapp', now() - make_interval(secs => 20000 - i), now()
    from generate_series(1, 20000) as i`.execute(db);
  await sql`analyze outbound_messages`.execute(db);
  const { db: logged, captured } = recordingDb(f.database.handle.pool);
  const outbox = createOutbox({ db: logged, jobs: f.deps.jobs, whatsapp: f.deps.whatsapp, sms: f.deps.sms, config: f.deps.config, metrics: f.deps.metrics, logger: f.deps.logger });
  // Nothing is stuck (every unsent row was touched just now): the sweep only looks.
  assert.equal(await outbox.sweep(), 0);
  const sweep = captured.find((q) => /from "outbound_messages"/.test(q.sql) && /order by "updated_at"/.test(q.sql));
  assert.ok(sweep !== undefined, 'the sweep statement was not seen');
  assert.deepEqual(await readsOf(sweep, 'outbound_messages'), ['outbound_messages_recipient_unsent_idx']);
});
