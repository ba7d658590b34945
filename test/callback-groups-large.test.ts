/**
 * Large callback groups (src/payments/service.ts: 2 at once of up to 256, a spare after 500 ms)
 * and the provider connection limit (src/providers/http.ts, 256), from a review: real app,
 * real HTTP, both databases. The tests named "was a defect" failed before their fix
 * (src/batch.ts watchForSpare, src/metrics.ts group-size buckets).
 */
import assert from 'node:assert/strict';
import { createHook } from 'node:async_hooks';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import axios from 'axios';
import { PROVIDER_MAX_SOCKETS, createProviderHttp } from '../src/providers/http.js';
import { after, before, describe, test } from 'node:test';
import { sha256Hex } from '../src/security.js';
import { callbackBody } from './fakes/daraja.js';
import { whileRowsHeld } from './helpers/callback-groups.js';
import { startChannelFixture, type ChannelFixture } from './helpers/channel.js';

let f: ChannelFixture;
before(async () => {
  // A long send timeout: one test sends 600 receipts at once to the fake Graph API on a busy machine
  // (a send timed out is retried later, as it should be, and the test would wait for that).
  f = await startChannelFixture({ env: { MPESA_CALLBACK_URL: 'https://invoiceiq.example/payments/stk/callback', WABA_TIMEOUT_MS: '20000' } });
});
after(async () => {
  await f.close();
});

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let merchantSeq = 0;
type Seeded = { token: string; checkout: string; invoiceId: string; attemptId: string; customer: string };

/** One merchant with `n` sent invoices of KES 100, each with a pending attempt whose token is known (three statements). */
async function seedMany(n: number): Promise<{ merchant: string; attempts: Seeded[] }> {
  merchantSeq += 1;
  const db = f.database.handle.db;
  const merchant = `2547558${String(merchantSeq).padStart(5, '0')}`;
  const { id: merchantId } = await db.insertInto('merchants').values({ phone: merchant, business_name: `Bulk Shop ${merchantSeq}` }).returning('id').executeTakeFirstOrThrow();
  const customers = Array.from({ length: n }, (_, i) => `2547668${String(merchantSeq).padStart(2, '0')}${String(i + 1).padStart(3, '0')}`);
  const invoices = await db
    .insertInto('invoices')
    .values(customers.map((customer, i) => ({ merchant_id: merchantId, number: i + 1, customer_phone: customer, amount: '100', description: 'bulk', status: 'sent' as const, due_date: '2026-12-31' })))
    .returning(['id', 'number'])
    .execute();
  const byNumber = new Map(invoices.map((row) => [row.number, row.id]));
  const attempts = customers.map((customer, i) => ({
    customer,
    invoiceId: byNumber.get(i + 1)!,
    token: `bulk-${merchantSeq}-${i + 1}-token-0123456789abcdef`,
    checkout: `ws_CO_bulk_${merchantSeq}_${i + 1}`,
  }));
  const ids = await db
    .insertInto('payment_attempts')
    .values(attempts.map((a) => ({ invoice_id: a.invoiceId, checkout_request_id: a.checkout, merchant_request_id: `mr_${a.checkout}`, amount: '100', phone: a.customer, callback_token_hash: sha256Hex(a.token), push_started_at: new Date() })))
    .returning(['id', 'invoice_id'])
    .execute();
  const attemptOf = new Map(ids.map((row) => [row.invoice_id, row.id]));
  // Everyone wrote lately: the receipts go free-form over the Graph API.
  await db
    .insertInto('conversations')
    .values([merchant, ...customers].map((phone) => ({ phone, state: JSON.stringify({ version: 0 }), last_inbound_at: new Date() })))
    .onConflict((oc) => oc.doNothing())
    .execute();
  return { merchant, attempts: attempts.map((a) => ({ ...a, attemptId: attemptOf.get(a.invoiceId)! })) };
}

/** The callback group-size histogram: its count, sum and buckets (le -> cumulative count). */
async function callbackGroups(): Promise<{ count: number; sum: number; buckets: Map<string, number> }> {
  const metric = await f.deps.metrics.groupCommitSize.get();
  const mine = metric.values.filter((v) => v.labels.path === 'mpesa_callback');
  return {
    count: mine.find((v) => v.metricName === 'invoiceiq_group_commit_size_count')?.value ?? 0,
    sum: mine.find((v) => v.metricName === 'invoiceiq_group_commit_size_sum')?.value ?? 0,
    buckets: new Map(mine.filter((v) => v.metricName === 'invoiceiq_group_commit_size_bucket').map((v) => [String((v.labels as Record<string, unknown>).le), v.value])),
  };
}

function callback(token: string, body: unknown) {
  return Promise.resolve(f.app.request(`/payments/stk/callback/${token}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }));
}
const paid = (a: Seeded, receipt: string, amount = 100) =>
  callbackBody({ checkoutRequestId: a.checkout, merchantRequestId: `mr_${a.checkout}`, resultCode: 0, resultDesc: 'The service request is processed successfully.', amount, receipt, phone: a.customer });

/** Timers (setTimeout) created in this process while `run` runs. */
async function timersCreatedDuring(run: () => Promise<void>): Promise<number> {
  let timers = 0;
  const hook = createHook({
    init(_id, type) {
      if (type === 'Timeout') timers += 1;
    },
  });
  hook.enable();
  try {
    await run();
  } finally {
    hook.disable();
  }
  return timers;
}

describe('callback groups: 2 at once, a spare after 500 ms', () => {
  test('300 callbacks at once: groups of more than 64 commit (parameters, statement sizes), every invoice paid once, and both receipts of each sent once', { timeout: 120_000 }, async () => {
    const { merchant, attempts } = await seedMany(300);
    const before = await callbackGroups();
    const answers = await Promise.all(attempts.map((a, i) => callback(a.token, paid(a, `RBULK${String(i).padStart(5, '0')}`))));
    assert.deepEqual(new Set(answers.map((r) => r.status)), new Set([200]));
    const after = await callbackGroups();
    assert.equal(after.sum - before.sum, 300);
    const groups = after.count - before.count;
    // Groups larger than 64: 300 callbacks in at most 4 groups (the old limit needed 5 or more).
    assert.ok(groups <= 4, `300 callbacks took ${groups} groups`);
    const db = f.database.handle.db;
    const invoices = await db.selectFrom('invoices').select(['status', 'mpesa_receipt']).where('id', 'in', attempts.map((a) => a.invoiceId)).execute();
    assert.equal(invoices.filter((row) => row.status === 'paid').length, 300);
    assert.equal(new Set(invoices.map((row) => row.mpesa_receipt)).size, 300);
    await f.deps.outbox.idle();
    const customers = new Set(attempts.map((a) => a.customer));
    const receiptRows = () => db.selectFrom('outbound_messages').select(['id', 'recipient', 'status']).where('kind', '=', 'receipt').where('recipient', 'in', [...customers, merchant]).execute();
    // One merchant taking 300 payments at once gets 300 receipts one after another: on a busy
    // machine the last of them can outlast their eager tries and be left to their jobs (the
    // safety net, minutes away here). They are delivered here as their jobs would deliver them.
    for (let round = 0; round < 20; round += 1) {
      const left = (await receiptRows()).filter((row) => row.status === 'queued').map((row) => row.id);
      if (left.length === 0) break;
      await f.deps.outbox.deliverMany(left);
      await f.deps.outbox.idle();
    }
    const receipts = await receiptRows();
    assert.equal(receipts.length, 600);
    const unsent = await db.selectFrom('outbound_messages').select(['status', 'last_error', 'attempts']).where('id', 'in', receipts.filter((r) => r.status !== 'sent').map((r) => r.id).concat(['00000000-0000-0000-0000-000000000000'])).execute();
    assert.deepEqual(unsent, [], 'every receipt sent');
    assert.deepEqual(new Set(receipts.map((row) => row.status)), new Set(['sent']));
    // Over the Graph API (everyone is inside the window): 600 sends at once, beyond the 256 connections.
    assert.equal(f.graph.sentTo(merchant).length, 300, 'the merchant got each receipt once');
    for (const customer of customers) assert.equal(f.graph.sentTo(customer).length, 1, `customer ${customer} got one receipt`);
  });

  test('was a defect: the group-size histogram (README: "shows the group sizes") tops out at 64, so groups of 65 to 256 callbacks all land in +Inf', async () => {
    const { attempts } = await seedMany(200);
    const before = await callbackGroups();
    await Promise.all(attempts.map((a, i) => callback(a.token, paid(a, `RHIST${String(i).padStart(5, '0')}`))));
    const after = await callbackGroups();
    const groups = after.count - before.count;
    const mean = (after.sum - before.sum) / groups;
    assert.ok(mean > 64, `precondition: groups larger than 64 (mean ${mean.toFixed(1)})`);
    const finite = [...after.buckets.keys()].filter((le) => le !== '+Inf').map(Number);
    assert.ok(
      Math.max(...finite) >= 256,
      `the largest finite bucket is ${Math.max(...finite)}: a group of ${Math.round(mean)} callbacks cannot be told from one of 256`,
    );
    // Its 400 receipts go out before the next test counts timers.
    await f.deps.outbox.idle();
  });

  test('was a defect: both callback groups stuck on a lock and a repeated callback (same token) waiting: the batcher spins on 0 ms timers (hundreds a second) until a group ends', async () => {
    const [first, second] = (await seedMany(2)).attempts as [Seeded, Seeded];
    // Another connection holds both attempts (a reconciliation, another machine). On the
    // embedded database the one connection itself is held: the groups wait for it instead.
    const answers: Array<Promise<Response>> = [];
    let quiet = 0;
    let spinning = 0;
    await whileRowsHeld(f, 'payment_attempts', [first.attemptId, second.attemptId], async () => {
      answers.push(callback(first.token, paid(first, 'RREVSPIN01')));
      await sleep(50);
      answers.push(callback(second.token, paid(second, 'RREVSPIN02')));
      await sleep(600);
      // Both groups stuck for more than 500 ms, nothing waiting: the baseline.
      quiet = await timersCreatedDuring(() => sleep(500));
      // Safaricom sends the first callback again (no answer yet): it must wait for its group.
      answers.push(callback(first.token, paid(first, 'RREVSPIN01')));
      await sleep(20);
      spinning = await timersCreatedDuring(() => sleep(500));
    });
    assert.deepEqual((await Promise.all(answers)).map((r) => r.status), [200, 200, 200]);
    assert.ok(
      spinning < quiet + 50,
      `while a repeated callback waited behind its stuck group, ${spinning} timers were created in 500 ms (${quiet} in the 500 ms before it came)`,
    );
  });
});

describe('provider HTTP: at most 256 connections', () => {
  test(`a call cancelled while it waits for one of the ${PROVIDER_MAX_SOCKETS} connections rejects at once (ERR_CANCELED), is never sent, and takes no connection with it`, async () => {
    const held: ServerResponse[] = [];
    const paths: string[] = [];
    let connections = 0;
    const server = createServer((req, res) => {
      paths.push(req.url ?? '');
      req.resume();
      req.on('end', () => {
        if (req.url === '/slow') held.push(res);
        else res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      });
    });
    server.on('connection', () => {
      connections += 1;
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const http = createProviderHttp();
    try {
      const slow = Array.from({ length: PROVIDER_MAX_SOCKETS }, () => http.post(`${base}/slow`, {}, { timeout: 10_000 }));
      while (held.length < PROVIDER_MAX_SOCKETS) await sleep(10);
      const controller = new AbortController();
      const waiting = http.post(`${base}/cancelled`, {}, { timeout: 10_000, signal: controller.signal });
      await sleep(50);
      const started = performance.now();
      controller.abort();
      await assert.rejects(waiting, (error: unknown) => axios.isAxiosError(error) && error.code === 'ERR_CANCELED');
      assert.ok(performance.now() - started < 500);
      for (const res of held.splice(0)) res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      for (const response of await Promise.all(slow)) assert.equal(response.status, 200);
      const next = await Promise.all(Array.from({ length: 3 }, () => http.post(`${base}/fast`, {}, { timeout: 2000 })));
      assert.deepEqual(next.map((response) => response.status), [200, 200, 200]);
      assert.ok(!paths.includes('/cancelled'), 'the cancelled call reached the server');
      assert.equal(connections, PROVIDER_MAX_SOCKETS, 'connections opened in all');
    } finally {
      for (const res of held.splice(0)) res.end();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
