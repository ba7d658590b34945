/**
 * How Postgres runs the outbox's per-message statements that name their rows by id:
 * recording sends (recordSent), claiming (claim), and checking rows written claimed for an
 * older unsent message to the same person (giveBackOvertaking). The table here is as a busy service's is
 * between vacuums: many messages sent, a few unsent, statistics that say so. Compared plainly,
 * `status = 'sending'` lets the planner prove the partial indexes' condition (unsent rows) and
 * read the whole of one to AND it with the ids; under load every message sent since the last
 * vacuum leaves an entry there that a bitmap scan never marks dead, so that read grows with
 * the traffic (bench/callbacks.ts, perf: about a tenth of Postgres's CPU). The statements
 * compare the status through coalesce, and their rows are found by primary key. The statements
 * are the ones the outbox runs (captured through Kysely's log) and are explained, not run
 * again; the control shows the same text with the plain comparison does read the partial index.
 * Both databases (PGlite runs Postgres's planner too).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sql, type CompiledQuery } from 'kysely';
import { createOutbox } from '../src/delivery/outbox.js';
import { startChannelFixture, textDrafts, type ChannelFixture } from './helpers/channel.js';
import { planNodes, readsOf as readsOfPlan, recordingDb } from './helpers/plans.js';

let f: ChannelFixture;
before(async () => {
  f = await startChannelFixture({ env: { DELIVERY_SAFETY_NET_SECONDS: '3600' } });
});
after(() => f.close());

const pool = () => f.database.handle.pool;
/** How each row source of `alias` in the statement's plan is read: an index's name, or 'seq' for the whole table. */
const readsOf = (query: Pick<CompiledQuery, 'sql' | 'parameters'>, alias: string) => readsOfPlan(pool(), query, (n) => n.Alias === alias);

/** An outbox on the fixture's providers whose statements are recorded (and its Kysely, to write with). */
function recordingOutbox() {
  const { db, captured } = recordingDb(pool());
  return { db, captured, outbox: createOutbox({ db, jobs: f.deps.jobs, whatsapp: f.deps.whatsapp, sms: f.deps.sms, config: f.deps.config, metrics: f.deps.metrics, logger: f.deps.logger }) };
}

test("the outbox's per-message statements find their rows by primary key and each person's unsent messages through their index, never by reading a partial index whole", async () => {
  const db = f.database.handle.db;
  // A busy service's table: thousands of messages sent, a few unsent, the statistics current.
  await sql`
    insert into outbound_messages (recipient, kind, content, status, channel, created_at, updated_at)
    select '2547' || lpad((i % 3000)::text, 8, '0'), 'reply', '{"message":{"type":"text","body":"sent"}}'::jsonb, 'sent', 'whatsapp',
      now() - make_interval(secs => 20000 - i), now() - make_interval(secs => 20000 - i)
    from generate_series(1, 6000) as i`.execute(db);
  await sql`analyze outbound_messages`.execute(db);

  const { db: logged, captured, outbox } = recordingOutbox();
  const [a, b] = ['254701990001', '254701990002'];
  await f.chatting(a);
  await f.chatting(b);
  // Written queued and delivered by id: a claim, then the sends recorded.
  const ids = await logged.transaction().execute((trx) => outbox.enqueue(trx, [...textDrafts(a, 2), ...textDrafts(b, 1)]));
  const outcomes = await outbox.deliverMany(ids);
  assert.deepEqual([...outcomes.values()], ['sent', 'sent', 'sent']);
  await outbox.idle();

  // Written claimed and sent at once: the check for an older unsent message (given back if so).
  const written = await logged.transaction().execute((trx) => outbox.enqueueClaimed(trx, textDrafts(b, 1, 5)));
  outbox.dispatchWritten(written);
  await outbox.idle();

  const claim = captured.find((q) => /^update "outbound_messages" set "status" = \$1, "updated_at" = date_trunc/.test(q.sql));
  const recordSent = captured.find((q) => /with recorded as \(\s*update outbound_messages o/.test(q.sql));
  assert.ok(claim !== undefined, 'the claim statement was not seen');
  assert.ok(recordSent !== undefined, 'the recordSent statement was not seen');
  const giveBack = captured.find((q) => /update outbound_messages o\s+set status = 'queued'/.test(q.sql));
  assert.ok(giveBack !== undefined, 'the give-back statement was not seen');

  const partial = ['outbound_messages_recipient_unsent_idx'];
  // The claim's rows (alias outbound_messages) and recordSent's (alias o); the claim's look for an
  // older unsent message to the same person (alias older) rightly reads the person's unsent rows.
  assert.deepEqual(await readsOf(claim, 'outbound_messages'), ['outbound_messages_pkey'], 'the claim');
  assert.deepEqual(await readsOf(recordSent, 'o'), ['outbound_messages_pkey'], 'recordSent');
  assert.deepEqual(await readsOf(giveBack, 'o'), ['outbound_messages_pkey'], 'the give-back check');
  // Written claimed: each row's person's unsent messages looked up through their index, row by
  // row; never every unsent row of the table hashed (a bitmap read of the whole partial index).
  // A write to 150 people (a callback group's receipts), rolled back: its plan is what matters.
  const many = Array.from({ length: 150 }, (_, i) => textDrafts(`2547019${String(i).padStart(5, '0')}`, 1)[0]!);
  const rolledBack = new Error('rolled back');
  await logged
    .transaction()
    .execute(async (trx) => {
      await outbox.enqueueClaimed(trx, many);
      throw rolledBack;
    })
    .catch((error: unknown) => {
      if (error !== rolledBack) throw error;
    });
  const write = captured.findLast((q) => /^\s*with .*insert into outbound_messages/s.test(q.sql) && /older/.test(q.sql));
  assert.ok(write !== undefined, 'the claimed write was not seen');
  const older = (await planNodes(pool(), write)).filter((n) => n.Alias === 'older');
  assert.deepEqual(
    older.map((n) => [/^Index (Only )?Scan$/.test(n['Node Type']), n['Index Name'], /recipient = v\.recipient/.test(String(n['Index Cond']))]),
    [[true, 'outbound_messages_recipient_unsent_idx', true]],
    'the claimed write',
  );

  // Control: the same statements comparing the status plainly read a partial index whole.
  const plain = (q: CompiledQuery) => ({ sql: q.sql.replace(/coalesce\(("?[a-z_]+"?\."?status"?), ''\)/g, '$1'), parameters: q.parameters });
  assert.notEqual(plain(recordSent).sql, recordSent.sql);
  const plainRecord = await readsOf(plain(recordSent), 'o');
  const plainClaim = await readsOf(plain(claim), 'outbound_messages');
  const plainGiveBack = await readsOf(plain(giveBack), 'o');
  assert.ok(
    [...plainRecord, ...plainClaim].some((index) => partial.includes(index)),
    `control: the plain comparison did not pick a partial index here (${JSON.stringify({ plainRecord, plainClaim })}), so this test shows nothing`,
  );
  assert.ok(plainGiveBack.some((index) => partial.includes(index)), `control: the plain give-back check read ${JSON.stringify(plainGiveBack)}`);
});

test('claims and give-backs name their messages as one array: the same statement text for one message or many', async () => {
  const { db: logged, captured, outbox } = recordingOutbox();
  const [a, b, c] = ['254701990011', '254701990012', '254701990013'];
  for (const person of [a, b, c]) await f.chatting(person);
  const one = await logged.transaction().execute((trx) => outbox.enqueue(trx, textDrafts(a, 1)));
  const three = await logged.transaction().execute((trx) => outbox.enqueue(trx, [...textDrafts(b, 2), ...textDrafts(c, 1)]));
  assert.deepEqual([...(await outbox.deliverMany(one)).values()], ['sent']);
  assert.deepEqual([...(await outbox.deliverMany(three)).values()], ['sent', 'sent', 'sent']);
  await outbox.idle();
  const claims = captured.filter((q) => /^update "outbound_messages" set "status" = \$1, "updated_at" = date_trunc/.test(q.sql));
  assert.equal(claims.length, 2, 'two claims');
  assert.deepEqual(claims.map((q) => (q.parameters.find(Array.isArray) as unknown[] | undefined)?.length), [1, 3], 'each names its messages in one array parameter');
  assert.equal(claims[0]!.sql, claims[1]!.sql);
  assert.doesNotMatch(claims[0]!.sql, /\bin \(\$/, 'no IN list of parameters');

  // The give-back check, for a write claimed at once (one message, then two).
  const written = [await logged.transaction().execute((trx) => outbox.enqueueClaimed(trx, textDrafts(a, 1, 5)))];
  written.push(await logged.transaction().execute((trx) => outbox.enqueueClaimed(trx, textDrafts(b, 2, 5))));
  for (const w of written) outbox.dispatchWritten(w);
  await outbox.idle();
  const giveBacks = captured.filter((q) => /update outbound_messages o\s+set status = 'queued'/.test(q.sql));
  assert.equal(giveBacks.length, 2, 'two give-back checks');
  assert.equal(giveBacks[0]!.sql, giveBacks[1]!.sql);
  assert.doesNotMatch(giveBacks[0]!.sql, /\bin \(\$/);
});
