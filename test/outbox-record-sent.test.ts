/**
 * A send the provider accepted whose recording the database refuses (a failover, a reset
 * connection, a statement timeout) is recorded again and again (src/delivery/outbox.ts
 * recordSentPatiently), not left claimed: once its claim timed out, another worker would send
 * it a second time. Real faults: a trigger makes the database refuse to mark chosen messages
 * sent for the first few tries. Both databases, fake Graph API on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sql } from 'kysely';
import type { OutboundDraft } from '../src/domain/outbound.js';
import { channelSuite, textDrafts, type ChannelFixture } from './helpers/channel.js';

let f: ChannelFixture;
channelSuite({ env: { DELIVERY_SAFETY_NET_SECONDS: '3600', WABA_TIMEOUT_MS: '1000' } }, (started) => (f = started));

let next = 700;
const phone = () => `2547023${String((next += 1)).padStart(5, '0')}`;
const db = () => f.database.handle.db;

async function write(drafts: OutboundDraft[]): Promise<string[]> {
  await f.chatting(drafts[0]!.recipient);
  return db().transaction().execute((trx) => f.deps.outbox.enqueue(trx, drafts));
}

const rowsOf = (ids: readonly string[]) => db().selectFrom('outbound_messages').select(['id', 'recipient', 'status', 'provider_message_id', 'attempts']).where('id', 'in', [...ids]).execute();

/**
 * While `during` runs, the database refuses to mark sent the messages to `recipients`, the
 * first `times` tries (all of them together count: a sequence, which a rollback does not undo).
 */
async function refusingSent<T>(recipients: readonly string[], times: number, during: () => Promise<T>): Promise<T> {
  const list = sql.join(recipients.map((r) => sql.lit(r)));
  await sql`create sequence record_fault_seq`.execute(db());
  await sql`create function refuse_record() returns trigger language plpgsql as $$
    begin
      if new.status = 'sent' and new.recipient in (${list}) and nextval('record_fault_seq') <= ${sql.lit(times)} then
        raise exception 'refused for the test';
      end if;
      return new;
    end $$`.execute(db());
  await sql`create trigger refuse_record before update on outbound_messages for each row execute function refuse_record()`.execute(db());
  try {
    return await during();
  } finally {
    await sql`drop trigger refuse_record on outbound_messages`.execute(db());
    await sql`drop function refuse_record()`.execute(db());
    await sql`drop sequence record_fault_seq`.execute(db());
  }
}

test('a send whose recording the database refuses twice is recorded on a later try: sent once, recorded sent with its wamid', async () => {
  const to = phone();
  const [id] = await write(textDrafts(to, 1));
  const outcome = await refusingSent([to], 2, () => f.deps.outbox.deliver(id!));
  assert.equal(outcome, 'sent');
  assert.equal(f.graph.sentTo(to).length, 1, 'Meta saw it once');
  const [row] = await rowsOf([id!]);
  assert.equal(row!.status, 'sent');
  assert.match(row!.provider_message_id ?? '', /^wamid\./, 'its wamid is kept, so its status reports match');
  // Nothing left for a job to send again.
  assert.equal(await f.deps.outbox.deliver(id!), 'not_pending');
  assert.equal(f.graph.sentTo(to).length, 1);
});

test('a whole flush refused at first: each message is recorded on its own later try; none is sent twice, and a person\'s later message still goes after it', async () => {
  const people = [phone(), phone(), phone()];
  const ids: string[] = [];
  for (const to of people) ids.push(...(await write(textDrafts(to, 2))));
  // Refused: the flush of all the first messages together, then each one alone, once more.
  const outcomes = await refusingSent(people, 1 + people.length, () => f.deps.outbox.deliverMany(ids));
  assert.deepEqual([...outcomes.values()], ids.map(() => 'sent'));
  for (const to of people) assert.deepEqual(f.sentTexts(to), ['part 0', 'part 1'], `${to}: each once, in order`);
  const rows = await rowsOf(ids);
  assert.ok(rows.every((r) => r.status === 'sent' && r.provider_message_id !== null));
});

test('one the database never lets be recorded: given up after the patience (an error log), left claimed, sent once so far', async () => {
  const to = phone();
  const [id] = await write(textDrafts(to, 1));
  const outbox = f.anotherOutbox({ recordSentPatienceMs: 600 });
  const started = performance.now();
  const outcome = await refusingSent([to], 1_000, () => outbox.deliver(id!).catch((error: unknown) => error));
  assert.ok(outcome instanceof Error, `an error, not ${String(outcome)}`);
  assert.ok(performance.now() - started < 5_000, 'gave up after its patience');
  assert.equal(f.graph.sentTo(to).length, 1);
  const [row] = await rowsOf([id!]);
  assert.equal(row!.status, 'sending', 'still claimed: its job sends it once the claim times out (the known at-least-once)');
});
