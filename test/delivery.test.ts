import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { sql } from 'kysely';
import type { OutboundDraft, OutboundKind } from '../src/domain/outbound.js';
import { statusUpdate } from './fixtures/whatsapp.js';
import { startChannelFixture, waitFor, type ChannelFixture } from './helpers/channel.js';

let f: ChannelFixture;
let phoneCounter = 100;
const nextPhone = () => `2547001${String((phoneCounter += 1)).padStart(5, '0')}`;

before(async () => {
  f = await startChannelFixture({
    // The safety-net job waits an hour here so each test drives delivery itself; one test
    // below makes a job due to show the worker delivering.
    env: { DELIVERY_MAX_ATTEMPTS: '2', DELIVERY_SAFETY_NET_SECONDS: '3600', WABA_TEMPLATE_INVOICE: 'invoice_v1', WABA_TEMPLATE_LANGUAGE: 'en' },
    // No inbound retry worker: the tests that keep a report retry it by hand, and a worker taking
    // its retry job (due 1-2 s after it was kept) first would answer them not_pending.
    idleQueues: ['retry-inbound-event'],
  });
});
after(() => f.close());
beforeEach(async () => {
  await f.deps.outbox.idle();
  f.graph.reset();
  f.smsAnswers.length = 0;
});

/** Opens (or not) the recipient's 24-hour window. */
async function contact(phone: string, lastInboundAt: Date | null): Promise<void> {
  await f.database.handle.db
    .insertInto('conversations')
    .values({ phone, state: JSON.stringify({ version: 0 }), last_inbound_at: lastInboundAt })
    .onConflict((oc) => oc.column('phone').doUpdateSet({ last_inbound_at: lastInboundAt }))
    .execute();
}

function draft(recipient: string, kind: OutboundKind = 'reply', withTemplate = false): OutboundDraft {
  return {
    recipient,
    kind,
    payload: {
      message: { type: 'buttons', body: 'Invoice INV-0001 from Duka: KES 1,500 for 2 bags of flour.', buttons: [{ id: 'pay:INV-0001', title: 'Pay now' }] },
      sms: 'Duka: invoice INV-0001 KES 1,500. An M-PESA prompt is on its way; reply PAY to get a new one.',
      ...(withTemplate ? { template: { parameters: ['Duka', 'INV-0001', 'KES 1,500'], buttonPayload: 'pay:INV-0001' } } : {}),
    },
  };
}

/** Writes drafts through the outbox (in a transaction) without dispatching them. */
async function write(...drafts: OutboundDraft[]): Promise<string[]> {
  return f.database.handle.db.transaction().execute((trx) => f.deps.outbox.enqueue(trx, drafts));
}

async function row(id: string) {
  return f.database.handle.db.selectFrom('outbound_messages').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
}

/** The retry's job runs: its time has come (moved forward here instead of waiting for it). */
async function retryNow(id: string) {
  await f.database.handle.db.updateTable('outbound_messages').set({ next_attempt_at: sql`now() - interval '1 second'` }).where('id', '=', id).execute();
  return f.deps.outbox.deliver(id);
}

async function counter(name: string, labels: string): Promise<number> {
  const text = await f.deps.metrics.registry.metrics();
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) && l.includes(labels))
    .reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
}

describe('routing', () => {
  test('inside the window a message goes free-form on WhatsApp', async () => {
    const to = nextPhone();
    await contact(to, new Date());
    const [id] = await write(draft(to));
    assert.equal(await f.deps.outbox.deliver(id!), 'sent');
    const sent = f.graph.sentTo(to);
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.body.type, 'interactive');
    const r = await row(id!);
    assert.equal(r.status, 'sent');
    assert.equal(r.channel, 'whatsapp');
  });

  test('outside the window an invoice goes as the configured template with its quick-reply payload', async () => {
    const to = nextPhone();
    await contact(to, new Date(Date.now() - 25 * 3600_000));
    const [id] = await write(draft(to, 'invoice', true));
    assert.equal(await f.deps.outbox.deliver(id!), 'sent');
    const [sent] = f.graph.sentTo(to);
    assert.equal(sent!.body.type, 'template');
    const template = sent!.body.template as { name: string; language: { code: string }; components: Array<{ type: string; parameters: Array<{ text?: string; payload?: string }> }> };
    assert.equal(template.name, 'invoice_v1');
    assert.equal(template.language.code, 'en');
    assert.deepEqual(template.components[0]!.parameters.map((p) => p.text), ['Duka', 'INV-0001', 'KES 1,500']);
    assert.equal(template.components[1]!.parameters[0]!.payload, 'pay:INV-0001');
  });

  test('outside the window with no template configured for the kind it goes by SMS', async () => {
    const to = nextPhone(); // never wrote to us: no conversation row at all
    const [id] = await write(draft(to, 'receipt', true));
    assert.equal(await f.deps.outbox.deliver(id!), 'sent');
    assert.equal(f.graph.sentTo(to).length, 0);
    const sms = f.sms.filter((s) => s.to === `+${to}`);
    assert.equal(sms.length, 1);
    assert.equal(sms[0]!.from, 'INVOICEIQ');
    assert.match(sms[0]!.message, /reply PAY/);
    const r = await row(id!);
    assert.equal(r.channel, 'sms');
    assert.equal(r.fallback_reason, 'outside_window_no_template');
    assert.match(r.sms_message_id ?? '', /^ATXid_/);
  });
});

describe('synchronous WhatsApp failures', () => {
  for (const code of [131026, 131047, 131048, 131049]) {
    test(`error ${code} falls back to SMS at once`, async () => {
      const to = nextPhone();
      await contact(to, new Date());
      f.graph.queue({ kind: 'error', status: 400, code });
      const [id] = await write(draft(to, 'invoice'));
      assert.equal(await f.deps.outbox.deliver(id!), 'fell_back');
      assert.equal(f.graph.sentTo(to).length, 1);
      assert.equal(f.sms.filter((s) => s.to === `+${to}`).length, 1);
      const r = await row(id!);
      assert.equal(r.status, 'sent');
      assert.equal(r.channel, 'sms');
      assert.equal(r.fallback_reason, `whatsapp_error_${code}`);
    });
  }

  test('a timeout is retried later with backoff, then succeeds without a second message', async () => {
    const to = nextPhone();
    await contact(to, new Date());
    f.graph.queue({ kind: 'hang' });
    const [id] = await write(draft(to));
    const retriesBefore = await counter('invoiceiq_delivery_retries_total', 'channel="whatsapp"');
    assert.equal(await f.deps.outbox.deliver(id!), 'retry_scheduled');
    const r = await row(id!);
    assert.equal(r.status, 'queued');
    assert.equal(r.attempts, 1);
    assert.match(r.last_error ?? '', /timeout/);
    assert.equal(await counter('invoiceiq_delivery_retries_total', 'channel="whatsapp"'), retriesBefore + 1);
    const jobs = await f.database.handle.pool.query(
      `select start_after > now() as later from pgboss.job where name = 'deliver-message' and data->>'messageId' = $1 and state = 'created' order by created_on desc limit 1`,
      [id],
    );
    assert.equal(jobs.rows[0]?.later, true, 'the retry is scheduled in the future');
    assert.equal(await f.deps.outbox.deliver(id!), 'not_pending', 'not before its time');
    assert.equal(await retryNow(id!), 'sent');
    assert.equal(await f.deps.outbox.deliver(id!), 'not_pending');
    assert.equal(f.sms.filter((s) => s.to === `+${to}`).length, 0);
  });

  test('5xx until retries run out falls back to SMS, once', async () => {
    const to = nextPhone();
    await contact(to, new Date());
    f.graph.queue({ kind: 'error', status: 503, code: 2 }, { kind: 'error', status: 500, code: 131000 });
    const [id] = await write(draft(to, 'invoice'));
    assert.equal(await f.deps.outbox.deliver(id!), 'retry_scheduled');
    assert.equal(await retryNow(id!), 'fell_back');
    const r = await row(id!);
    assert.equal(r.fallback_reason, 'whatsapp_retries_exhausted');
    assert.equal(r.channel, 'sms');
    assert.equal(f.sms.filter((s) => s.to === `+${to}`).length, 1);
    assert.equal(await f.deps.outbox.deliver(id!), 'not_pending');
  });

  test('rate limiting (130429) honours retry-after', async () => {
    const to = nextPhone();
    await contact(to, new Date());
    f.graph.queue({ kind: 'error', status: 429, code: 130429, retryAfter: 120 });
    const [id] = await write(draft(to));
    assert.equal(await f.deps.outbox.deliver(id!), 'retry_scheduled');
    const jobs = await f.database.handle.pool.query(
      `select extract(epoch from start_after - now()) as wait from pgboss.job where name = 'deliver-message' and data->>'messageId' = $1 and state = 'created' order by created_on desc limit 1`,
      [id],
    );
    assert.ok(Number(jobs.rows[0].wait) > 100, 'waits at least the retry-after');
  });
});

describe('status webhooks', () => {
  async function sentMessage(to: string): Promise<{ id: string; wamid: string }> {
    await contact(to, new Date());
    const [id] = await write(draft(to, 'invoice'));
    assert.equal(await f.deps.outbox.deliver(id!), 'sent');
    return { id: id!, wamid: (await row(id!)).provider_message_id! };
  }

  test('sent, delivered and read move forward; a late delivered never overwrites read', async () => {
    const to = nextPhone();
    const m = await sentMessage(to);
    await f.post(statusUpdate(m.wamid, 'read', to));
    assert.equal((await row(m.id)).status, 'read');
    await f.post(statusUpdate(m.wamid, 'delivered', to));
    await f.post(statusUpdate(m.wamid, 'sent', to));
    assert.equal((await row(m.id)).status, 'read');
  });

  test('a failed status after sent (131047) sends the same content by SMS, once, whatever arrives twice', async () => {
    const to = nextPhone();
    const m = await sentMessage(to);
    const fallbacksBefore = await counter('invoiceiq_message_fallbacks_total', 'reason="status_failed"');
    await f.post(statusUpdate(m.wamid, 'sent', to));
    const failed = statusUpdate(m.wamid, 'failed', to, 131047);
    await Promise.all([f.post(failed), f.post(failed), f.post(failed)]);
    await f.deps.outbox.idle();
    await waitFor(() => f.sms.filter((s) => s.to === `+${to}`).length >= 1, 5_000, 'SMS fallback');
    await f.post(statusUpdate(m.wamid, 'delivered', to));
    await new Promise((resolve) => setTimeout(resolve, 1_200)); // let the safety-net job run too
    await f.deps.outbox.idle();
    const sms = f.sms.filter((s) => s.to === `+${to}`);
    assert.equal(sms.length, 1);
    assert.match(sms[0]!.message, /INV-0001/);
    const r = await row(m.id);
    assert.equal(r.channel, 'sms');
    assert.equal(r.fallback_reason, 'status_failed_131047');
    assert.equal(await counter('invoiceiq_message_fallbacks_total', 'reason="status_failed"'), fallbacksBefore + 1);
  });

  test('a delivered report kept because it came before our send was recorded still wins over a later failed: no SMS (was a defect: the person got it again by SMS)', async () => {
    const to = nextPhone();
    await contact(to, new Date());
    const [id] = await write(draft(to, 'invoice'));
    const wamid = `wamid.delivered-early-${to}`;
    // Our send is in flight (claimed, not recorded) when Meta's delivered report comes: it is kept.
    await f.database.handle.db.updateTable('outbound_messages').set({ status: 'sending', updated_at: sql`now()` }).where('id', '=', id!).execute();
    await f.post(statusUpdate(wamid, 'delivered', to));
    const kept = await f.database.handle.db.selectFrom('inbound_events').select(['id', 'status']).where('external_key', '=', `${wamid}:delivered`).executeTakeFirstOrThrow();
    assert.equal(kept.status, 'retrying');
    // The send is recorded, then Meta reports failed (another device, say).
    await f.database.handle.db.updateTable('outbound_messages').set({ status: 'sent', channel: 'whatsapp', provider_message_id: wamid }).where('id', '=', id!).execute();
    await f.post(statusUpdate(wamid, 'failed', to, 131026));
    await f.deps.outbox.idle();
    assert.equal(f.sms.filter((s) => s.to === `+${to}`).length, 0, 'no SMS for a delivered message');
    let r = await row(id!);
    assert.equal(r.channel, 'whatsapp');
    assert.equal(r.status, 'delivered');
    // The kept report, retried, changes nothing more.
    assert.equal(await f.deps.inbound.retryEvent(kept.id), 'processed');
    r = await row(id!);
    assert.equal(r.status, 'delivered');
    assert.equal(r.fell_back_at, null);
  });

  test('a failed status for a message that already fell back does not send another SMS', async () => {
    const to = nextPhone();
    await contact(to, new Date());
    f.graph.queue({ kind: 'ok', wamid: `wamid.accepted-then-failed-${to}` });
    const [id] = await write(draft(to, 'invoice'));
    assert.equal(await f.deps.outbox.deliver(id!), 'sent');
    await f.post(statusUpdate(`wamid.accepted-then-failed-${to}`, 'failed', to, 131026));
    await waitFor(() => f.sms.filter((s) => s.to === `+${to}`).length === 1);
    // A second failure report under another status key (Meta retrying with errors) changes nothing.
    const other = statusUpdate(`wamid.accepted-then-failed-${to}`, 'failed', to, 131049) as { entry: Array<{ changes: Array<{ value: { statuses: Array<{ timestamp: string }> } }> }> };
    other.entry[0]!.changes[0]!.value.statuses[0]!.timestamp = '1';
    await f.post(other);
    await f.deps.outbox.idle();
    assert.equal(f.sms.filter((s) => s.to === `+${to}`).length, 1);
  });

  for (const code of [132001, 131056, 131008]) {
    test(`a failed status with any code (${code}: template, pair rate limit, parameter) still reaches the person by SMS`, async () => {
      const to = nextPhone();
      const m = await sentMessage(to);
      await f.post(statusUpdate(m.wamid, 'failed', to, code));
      await waitFor(() => f.sms.filter((s) => s.to === `+${to}`).length === 1, 5_000, 'SMS fallback');
      const r = await row(m.id);
      assert.equal(r.channel, 'sms');
      assert.equal(r.fallback_reason, `status_failed_${code}`);
    });
  }
});

describe('SMS', () => {
  test('a final SMS provider refusal (403 invalid number) marks the message failed', async () => {
    const to = nextPhone();
    f.smsAnswers.push({ statusCode: 403 });
    const [id] = await write(draft(to, 'receipt'));
    assert.equal(await f.deps.outbox.deliver(id!), 'failed');
    const r = await row(id!);
    assert.equal(r.status, 'failed');
    assert.match(r.last_error ?? '', /403/);
  });

  test('an SMS gateway error (HTTP 500, then statusCode 500) is retried, then the message fails when tries run out', async () => {
    const to = nextPhone();
    f.smsAnswers.push({ httpStatus: 500 }, { statusCode: 500 });
    const [id] = await write(draft(to, 'receipt'));
    assert.equal(await f.deps.outbox.deliver(id!), 'retry_scheduled');
    assert.equal(await retryNow(id!), 'failed');
    assert.equal(f.sms.filter((s) => s.to === `+${to}`).length, 2);
  });

  test('an SMS refused for the account (405 balance, HTTP 401 key) fails at once, as any final answer, and logs an error that calls a person', async () => {
    const before = f.logs.lines.filter((l) => /sms refused for the account/.test(JSON.stringify(l))).length;
    for (const answer of [{ statusCode: 405 }, { httpStatus: 401 }]) {
      const to = nextPhone();
      f.smsAnswers.push(answer);
      const [id] = await write(draft(to, 'receipt'));
      assert.equal(await f.deps.outbox.deliver(id!), 'failed');
      assert.equal((await row(id!)).status, 'failed');
    }
    const errors = f.logs.lines.filter((l) => /sms refused for the account/.test(JSON.stringify(l)));
    assert.equal(errors.length - before, 2);
    assert.ok(errors.every((l) => JSON.stringify(l).includes('"level":"error"')), JSON.stringify(errors[0]));
  });

  test('a message routed to SMS after its WhatsApp tries (the window closed meanwhile) gets its own SMS tries, as after any fallback', async () => {
    const to = nextPhone();
    await contact(to, new Date());
    const [id] = await write(draft(to));
    // WhatsApp: a 503 (retryable): one try used, a retry scheduled.
    f.graph.queue({ kind: 'error', status: 503, code: 2 });
    assert.equal(await f.deps.outbox.deliver(id!), 'retry_scheduled');
    // By the retry the 24-hour window has closed (no template for a reply): SMS. The gateway has
    // a passing 5xx: with DELIVERY_MAX_ATTEMPTS=2 "tries per channel", SMS has a second try left.
    await contact(to, new Date(Date.now() - 25 * 60 * 60 * 1000));
    f.smsAnswers.push({ statusCode: 500 });
    const outcome = await retryNow(id!);
    const r = await row(id!);
    assert.equal(f.sms.filter((s) => s.to === `+${to}`).length, 1);
    assert.deepEqual(
      { outcome, status: r.status, channel: r.channel, attempts: r.attempts },
      { outcome: 'retry_scheduled', status: 'queued', channel: 'sms', attempts: 1 },
      'the message failed after a single SMS try: the WhatsApp try was counted against SMS',
    );
    assert.equal(r.fallback_reason, 'outside_window_no_template');
    // The second SMS try goes out.
    assert.equal(await retryNow(id!), 'sent');
    assert.deepEqual([(await row(id!)).status, f.sms.filter((s) => s.to === `+${to}`).length], ['sent', 2]);
  });

  test('delivery reports (form and JSON) update the message, once, and never move it backwards', async () => {
    const to = nextPhone();
    const [id] = await write(draft(to, 'receipt'));
    assert.equal(await f.deps.outbox.deliver(id!), 'sent');
    const smsId = (await row(id!)).sms_message_id!;
    const form = await f.app.request('/sms/delivery-report', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ id: smsId, status: 'Success', phoneNumber: `+${to}`, networkCode: '63902' }).toString(),
    });
    assert.equal(form.status, 200);
    assert.equal((await row(id!)).status, 'delivered');
    const late = await f.app.request('/sms/delivery-report', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: smsId, status: 'Buffered', phoneNumber: `+${to}` }),
    });
    assert.equal(late.status, 200);
    assert.equal((await row(id!)).status, 'delivered');
    const again = await f.app.request('/sms/delivery-report', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ id: smsId, status: 'Success' }).toString(),
    });
    assert.deepEqual(await again.json(), { status: 'duplicate' });
  });

  test('a report that arrives before its SMS is recorded as sent is kept and applied by the retry, not lost', async () => {
    const to = nextPhone();
    const [id] = await write(draft(to, 'receipt'));
    // The SMS is being sent: the provider has answered, its success is not written yet.
    await f.database.handle.db.updateTable('outbound_messages').set({ status: 'sending', channel: 'sms' }).where('id', '=', id!).execute();
    const early = await f.app.request('/sms/delivery-report', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ id: 'ATXid_early_1', status: 'Success' }).toString(),
    });
    assert.equal(early.status, 200);
    assert.deepEqual(await early.json(), { status: 'retrying' });
    const event = await f.database.handle.db.selectFrom('inbound_events').select(['id', 'status']).where('source', '=', 'sms_report').where('external_key', '=', 'ATXid_early_1:Success').executeTakeFirstOrThrow();
    assert.equal(event.status, 'retrying');
    // The success is recorded; the retry then finds the message.
    await f.database.handle.db.updateTable('outbound_messages').set({ status: 'sent', sms_message_id: 'ATXid_early_1' }).where('id', '=', id!).execute();
    assert.equal(await f.deps.inbound.retryEvent(event.id), 'processed');
    assert.equal((await row(id!)).status, 'delivered');
  });

  test('a kept report that turns out to be about no SMS of ours is recorded as processed (unknown_message) at its retry, not parked as dead; fields the caller added are not stored', async () => {
    const to = nextPhone();
    const [id] = await write(draft(to, 'receipt'));
    await f.database.handle.db.updateTable('outbound_messages').set({ status: 'sending', channel: 'sms' }).where('id', '=', id!).execute();
    const forged = await f.app.request('/sms/delivery-report', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'ATXid_forged_1', status: 'Failed', junk: 'x'.repeat(1_000) }),
    });
    assert.deepEqual(await forged.json(), { status: 'retrying' }, 'kept: an SMS is in flight, it may be that one');
    const event = await f.database.handle.db.selectFrom('inbound_events').select(['id', 'payload']).where('source', '=', 'sms_report').where('external_key', '=', 'ATXid_forged_1:Failed').executeTakeFirstOrThrow();
    assert.deepEqual(Object.keys(event.payload as object).sort(), ['id', 'status'], 'only the fields read are stored');
    // That SMS is recorded under its own id: nothing is in flight, and the report is nobody's.
    await f.database.handle.db.updateTable('outbound_messages').set({ status: 'sent', sms_message_id: `ATXid_own_${id!}` }).where('id', '=', id!).execute();
    const dead = /invoiceiq_inbound_events_total\{source="sms_report",outcome="dead"\} (\d+)/.exec(await f.deps.metrics.registry.metrics())?.[1] ?? '0';
    assert.equal(await f.deps.inbound.retryEvent(event.id), 'processed');
    const settled = await f.database.handle.db.selectFrom('inbound_events').select(['status', 'last_error']).where('id', '=', event.id).executeTakeFirstOrThrow();
    assert.equal(settled.status, 'processed');
    assert.match(settled.last_error ?? '', /^unknown SMS id/);
    const metrics = await f.deps.metrics.registry.metrics();
    assert.equal(/invoiceiq_inbound_events_total\{source="sms_report",outcome="dead"\} (\d+)/.exec(metrics)?.[1] ?? '0', dead, 'not parked as dead');
    assert.match(metrics, /invoiceiq_inbound_events_total\{source="sms_report",outcome="unknown_message"\} [1-9]/);
    assert.equal((await row(id!)).status, 'sent', 'our SMS untouched');
  });

  test('delivery reports: unknown id 404 (nothing kept), bad fields 422, wrong content type 415, bad JSON 400', async () => {
    const post = (body: string, type: string) => f.app.request('/sms/delivery-report', { method: 'POST', headers: { 'content-type': type }, body });
    // No SMS is being sent: a report about an unknown id is about nothing of ours.
    await f.database.handle.db.updateTable('outbound_messages').set({ status: 'failed' }).where('channel', '=', 'sms').where('status', '=', 'sending').execute();
    assert.equal((await post('id=ATXid_nope&status=Success', 'application/x-www-form-urlencoded')).status, 404);
    const kept = await f.database.handle.db.selectFrom('inbound_events').select('id').where('external_key', '=', 'ATXid_nope:Success').execute();
    assert.deepEqual(kept, []);
    assert.equal((await post('id=ATXid_nope&status=Exploded', 'application/x-www-form-urlencoded')).status, 422);
    assert.equal((await post('id=x', 'text/plain')).status, 415);
    assert.equal((await post('{"id":', 'application/json')).status, 400);
  });
});

describe('never twice', () => {
  test('ten concurrent deliveries of one message make one request', async () => {
    const to = nextPhone();
    await contact(to, new Date());
    const [id] = await write(draft(to));
    const outcomes = await Promise.all(Array.from({ length: 10 }, () => f.deps.outbox.deliver(id!)));
    assert.equal(outcomes.filter((o) => o === 'sent').length, 1);
    assert.equal(f.graph.sentTo(to).length, 1);
  });

  test('the safety-net job delivers a message nobody dispatched, and only once', async () => {
    const to = nextPhone();
    await contact(to, new Date());
    const [id] = await write(draft(to));
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    assert.equal((await row(id!)).status, 'queued', 'nothing delivers it before its job is due');
    await f.database.handle.pool.query(`update pgboss.job set start_after = now() where name = 'deliver-messages' and data->'messageIds' ? $1`, [id]);
    await waitFor(async () => (await row(id!)).status === 'sent', 10_000, 'job delivery');
    f.deps.outbox.dispatchSoon([id!]);
    await f.deps.outbox.idle();
    assert.equal(f.graph.sentTo(to).length, 1);
  });

  test('a claim left by a crashed worker is taken over after the claim timeout', async () => {
    const to = nextPhone();
    await contact(to, new Date());
    const [id] = await write(draft(to));
    await f.database.handle.db.updateTable('outbound_messages').set({ status: 'sending', updated_at: sql`now()` }).where('id', '=', id!).execute();
    assert.equal(await f.deps.outbox.deliver(id!), 'busy');
    await f.database.handle.db.updateTable('outbound_messages').set({ updated_at: sql`now() - interval '5 minutes'` }).where('id', '=', id!).execute();
    assert.equal(await f.deps.outbox.deliver(id!), 'sent');
  });

  test('content that breaks WhatsApp limits is refused when written, not at delivery', async () => {
    const bad: OutboundDraft = {
      recipient: nextPhone(),
      kind: 'reply',
      payload: { message: { type: 'buttons', body: 'x', buttons: [{ id: 'a', title: 'This title is far too long' }] } },
    };
    await assert.rejects(write(bad));
  });
});
