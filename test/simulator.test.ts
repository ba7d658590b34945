/**
 * Simulator mode end to end, over real HTTP: the whole service as `npm start` runs it with no
 * accounts (startService on the embedded database, or on Postgres when TEST_DATABASE_URL is
 * set), the real WhatsApp and Daraja clients talking to the in-process sandbox, signed
 * webhooks and Daraja-shaped callbacks coming back to the real endpoints.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { loadConfig } from '../src/config.js';
import { createApp } from '../src/app.js';
import type { SimulatorState } from '../src/simulator/contract.js';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { ProviderError } from '../src/providers/errors.js';
import { createDarajaClient } from '../src/providers/mpesa/client.js';
import { startSimulator } from '../src/simulator/index.js';
import { startSandbox } from '../src/simulator/sandbox.js';
import { buildTestApp, captureLogs, productionEnv } from './helpers/app.js';
import { createTestDatabase } from './helpers/database.js';
import { botMessage, CUSTOMER, MERCHANT, startSimulatorService, textOf, type SimulatorRun } from './helpers/simulator.js';

async function onboard(sim: SimulatorRun, name: string): Promise<void> {
  assert.equal((await sim.send('merchant', { text: 'hi' })).status, 200);
  await sim.waitFor('the business name question', (s) => botMessage(s, 'merchant', /what is your business called/i));
  assert.equal((await sim.send('merchant', { text: name })).status, 200);
  await sim.waitFor('the welcome', (s) => botMessage(s, 'merchant', /Welcome, /));
}

/** One-line invoice, confirmed with the Send button; returns the invoice number shown. */
async function invoiceAndConfirm(sim: SimulatorRun, amount: number, description: string): Promise<string> {
  const before = (await sim.state()).chats.merchant.length;
  assert.equal((await sim.send('merchant', { text: `invoice 0722 000 002 ${amount} ${description}` })).status, 200);
  const confirm = await sim.waitFor('the confirmation buttons', (s) =>
    s.chats.merchant.slice(before).find((m) => m.from === 'bot' && m.content.type === 'buttons' && m.content.buttons.some((b) => b.id === 'confirm_send')),
  );
  const send = confirm.content.type === 'buttons' ? confirm.content.buttons.find((b) => b.id === 'confirm_send') : undefined;
  assert.ok(send);
  assert.equal((await sim.send('merchant', { reply: send })).status, 200);
  const created = await sim.waitFor('the invoice created message', (s) => s.chats.merchant.slice(before).find((m) => m.from === 'bot' && /✅ \*?INV-\d{4}\*? for/.test(textOf(m))));
  return /INV-\d{4}/.exec(textOf(created))![0];
}

/** Cancels every prompt still waiting (M-PESA keeps one prompt per phone at a time). */
async function settlePrompts(sim: SimulatorRun): Promise<void> {
  for (const prompt of (await sim.state()).prompts.filter((p) => p.state === 'waiting')) {
    await sim.post(`/simulator/api/prompts/${prompt.checkoutRequestId}`, { action: 'cancel' });
  }
}

const waitingPrompt = (s: SimulatorState, reference: string) => s.prompts.find((p) => p.accountReference === reference && p.state === 'waiting');

describe('simulator mode: the whole story with no accounts', () => {
  let sim: SimulatorRun;
  before(async () => {
    // Two tries per channel: "WhatsApp down" reaches SMS after one retry, not four.
    sim = await startSimulatorService({ DELIVERY_MAX_ATTEMPTS: '2' });
  });
  after(async () => {
    await sim.stop();
  });

  test('starts in simulator mode and says so with the URL', async () => {
    const line = sim.logs.lines.find((l) => /Simulator mode/.test(l.message));
    assert.ok(line, 'a start-up line names the simulator');
    assert.match(line.message, new RegExp(`http://localhost:${sim.service.port}/simulator`));
    const page = await fetch(`${sim.baseUrl}/simulator`);
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.match(html, /simulator\.js\?v=[0-9a-f]{16}/);
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'none'/);
    const script = html.match(/src="([^"]*simulator\.js[^"]*)"/)?.[1];
    assert.ok(script);
    assert.equal((await fetch(`${sim.baseUrl}${script.replaceAll('&amp;', '&')}`)).status, 200);
    assert.equal((await fetch(`${sim.baseUrl}/simulator/assets/..%2Fpackage.json`)).status, 404);
  });

  test('onboard, one-line invoice, Send button, template to the customer, PIN pays, receipts to both', async () => {
    await onboard(sim, 'Mama Mboga Supplies');
    const number = await invoiceAndConfirm(sim, 1500, 'Website design');

    // The customer never wrote: the invoice goes as the approved template, with a Pay button.
    const invoice = await sim.waitFor('the invoice template', (s) =>
      s.chats.customer.find((m) => m.content.type === 'template' && m.content.name === 'invoiceiq_invoice' && m.content.body.includes(number)),
    );
    assert.match(textOf(invoice), /Mama Mboga Supplies sent you invoice INV-\d{4} for KES 1,500: Website design/);
    // Delivery ticks follow the status webhooks the app acknowledged.
    await sim.waitFor('read ticks on the invoice', (s) => (s.chats.customer.find((m) => m.id === invoice.id)?.status === 'read' ? true : undefined));

    // Sending the invoice started an STK push: the prompt is on the customer's phone.
    const prompt = await sim.waitFor('the M-PESA prompt', (s) => waitingPrompt(s, number));
    assert.equal(prompt.amount, 1500);
    assert.equal(prompt.phone, CUSTOMER);
    assert.equal(prompt.who, 'customer');

    const answer = await sim.post(`/simulator/api/prompts/${prompt.checkoutRequestId}`, { action: 'pin', pin: '1234' });
    assert.equal(answer.status, 200);
    assert.deepEqual(await answer.json(), { state: 'paid' });

    const paid = await sim.waitFor('the callback to be posted', (s) => s.prompts.find((p) => p.checkoutRequestId === prompt.checkoutRequestId && p.callback === 'posted'));
    assert.match(paid.receipt ?? '', /^SK[A-Z0-9]{8}$/);
    const customerReceipt = await sim.waitFor('the customer receipt', (s) => s.chats.customer.find((m) => m.content.type === 'template' && m.content.name === 'invoiceiq_receipt'));
    assert.ok(textOf(customerReceipt).includes(paid.receipt!));
    const merchantReceipt = await sim.waitFor('the merchant receipt', (s) => botMessage(s, 'merchant', new RegExp(paid.receipt!)));
    assert.ok(textOf(merchantReceipt).includes(number));

    const row = await sim.service.deps.database.db
      .selectFrom('invoices')
      .innerJoin('merchants', 'merchants.id', 'invoices.merchant_id')
      .select(['invoices.status', 'invoices.mpesa_receipt'])
      .where('merchants.phone', '=', MERCHANT)
      .where('invoices.number', '=', Number(number.slice(4)))
      .executeTakeFirstOrThrow();
    assert.deepEqual(row, { status: 'paid', mpesa_receipt: paid.receipt });

    // The same answer again changes nothing: the prompt is done.
    const again = await sim.post(`/simulator/api/prompts/${prompt.checkoutRequestId}`, { action: 'pin', pin: '1234' });
    assert.deepEqual(await again.json(), { state: 'paid' });
  });

  test('a wrong PIN fails with 2001; the customer taps Pay on the invoice and pays on the new prompt', async () => {
    const number = await invoiceAndConfirm(sim, 700, 'Tomatoes');
    const first = await sim.waitFor('the first prompt', (s) => waitingPrompt(s, number));
    const wrong = await sim.post(`/simulator/api/prompts/${first.checkoutRequestId}`, { action: 'pin', pin: '9999' });
    assert.deepEqual(await wrong.json(), { state: 'wrong_pin' });
    await sim.waitFor('the merchant told of the wrong PIN', (s) => botMessage(s, 'merchant', new RegExp(`${number}[\\s\\S]*(PIN|pin)`)));

    const template = await sim.waitFor('the invoice template', (s) =>
      s.chats.customer.find((m) => m.content.type === 'template' && m.content.body.includes(number)),
    );
    assert.equal(template.content.type, 'template');
    const pay = template.content.type === 'template' ? template.content.buttons[0] : undefined;
    assert.ok(pay);
    // The payload names this invoice (its id's tag): merchants share invoice numbers.
    assert.match(pay.payload, new RegExp(`^pay:${number}~[0-9a-f]{8}$`));
    assert.equal(pay.title, 'Pay');
    assert.equal((await sim.send('customer', { templateButton: pay })).status, 200);
    const second = await sim.waitFor('a new prompt', (s) => s.prompts.find((p) => p.accountReference === number && p.state === 'waiting' && p.checkoutRequestId !== first.checkoutRequestId));
    assert.deepEqual(await (await sim.post(`/simulator/api/prompts/${second.checkoutRequestId}`, { action: 'pin', pin: '1234' })).json(), { state: 'paid' });
    // The customer wrote (tapped Pay), so the receipt comes inside the window, as free-form text.
    await sim.waitFor('the customer receipt', (s) => botMessage(s, 'customer', new RegExp(`${number}[\\s\\S]*SK[A-Z0-9]{8}`)));
  });

  test('cancel on the prompt is 1032; letting it time out is 1037; both reach the merchant in words', async () => {
    const number = await invoiceAndConfirm(sim, 300, 'Sukuma');
    const prompt = await sim.waitFor('the prompt', (s) => waitingPrompt(s, number));
    assert.deepEqual(await (await sim.post(`/simulator/api/prompts/${prompt.checkoutRequestId}`, { action: 'cancel' })).json(), { state: 'cancelled' });
    await sim.waitFor('the merchant told it was cancelled', (s) => botMessage(s, 'merchant', new RegExp(`${number}[\\s\\S]*cancel`, 'i')));
    const attempt = await sim.service.deps.database.db
      .selectFrom('payment_attempts')
      .select(['status', 'result_code'])
      .where('checkout_request_id', '=', prompt.checkoutRequestId)
      .executeTakeFirstOrThrow();
    assert.deepEqual(attempt, { status: 'failed', result_code: 1032 });

    assert.equal((await sim.send('customer', { text: 'pay' })).status, 200);
    const next = await sim.waitFor('a new prompt', (s) => s.prompts.find((p) => p.accountReference === number && p.state === 'waiting'));
    assert.deepEqual(await (await sim.post(`/simulator/api/prompts/${next.checkoutRequestId}`, { action: 'timeout' })).json(), { state: 'timed_out' });
    const deadline = performance.now() + 10_000;
    for (;;) {
      const row = await sim.service.deps.database.db.selectFrom('payment_attempts').select(['status', 'result_code']).where('checkout_request_id', '=', next.checkoutRequestId).executeTakeFirstOrThrow();
      if (row.result_code === 1037) {
        assert.equal(row.status, 'failed');
        break;
      }
      assert.ok(performance.now() < deadline, 'the 1037 callback was applied');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  });

  test('customer not on WhatsApp: Meta reports 131026 and the invoice reaches the SMS inbox', async () => {
    await sim.switches({ notOnWhatsApp: true });
    try {
      const number = await invoiceAndConfirm(sim, 2500, 'Cement');
      const sms = await sim.waitFor('the invoice by SMS', (s) => s.sms.customer.find((m) => m.body.includes(number)));
      assert.match(sms.body, /KES 2,500/);
      const failed = await sim.waitFor('the failed WhatsApp attempt', (s) =>
        s.chats.customer.find((m) => m.from === 'bot' && textOf(m).includes(number) && m.status === 'failed'),
      );
      assert.ok(failed);
      const row = await sim.service.deps.database.db
        .selectFrom('outbound_messages')
        .select(['channel', 'fallback_reason'])
        .where('recipient', '=', CUSTOMER)
        .where('kind', '=', 'invoice')
        .orderBy('created_at', 'desc')
        .executeTakeFirstOrThrow();
      assert.deepEqual(row, { channel: 'sms', fallback_reason: 'status_failed_131026' });
      await sim.waitFor('the prompt', (s) => waitingPrompt(s, number));
      await settlePrompts(sim);
    } finally {
      await sim.switches({ notOnWhatsApp: false });
    }
  });

  test('M-PESA callback lost: nothing changes until reconciliation asks with an STK query, then the invoice is paid', async () => {
    await sim.switches({ callbackLost: true });
    try {
      const number = await invoiceAndConfirm(sim, 900, 'Maize flour');
      const prompt = await sim.waitFor('the prompt', (s) => waitingPrompt(s, number));
      assert.deepEqual(await (await sim.post(`/simulator/api/prompts/${prompt.checkoutRequestId}`, { action: 'pin', pin: '1234' })).json(), { state: 'paid' });
      const lost = (await sim.state()).prompts.find((p) => p.checkoutRequestId === prompt.checkoutRequestId);
      assert.equal(lost?.callback, 'lost');
      const invoiceStatus = () =>
        sim.service.deps.database.db
          .selectFrom('invoices')
          .innerJoin('merchants', 'merchants.id', 'invoices.merchant_id')
          .select('invoices.status')
          .where('merchants.phone', '=', MERCHANT)
          .where('invoices.number', '=', Number(number.slice(4)))
          .executeTakeFirstOrThrow();
      assert.equal((await invoiceStatus()).status, 'sent');

      const reconciled = await sim.post('/simulator/api/reconcile');
      assert.equal(reconciled.status, 200);
      const figures = (await reconciled.json()) as { queried: number; applied: number };
      assert.ok(figures.applied >= 1, JSON.stringify(figures));
      assert.equal((await invoiceStatus()).status, 'paid');
      await sim.waitFor('the merchant receipt', (s) => botMessage(s, 'merchant', new RegExp(`${number}[\\s\\S]*(paid|received)`, 'i')));
    } finally {
      await sim.switches({ callbackLost: false });
    }
  });

  test('outside the 24-hour window: the invoice goes as a template; turning it off restores the window; the customer writing reopens it', async () => {
    const { db } = sim.service.deps.database;
    const lastInbound = async () =>
      (await db.selectFrom('conversations').select('last_inbound_at').where('phone', '=', CUSTOMER).executeTakeFirstOrThrow()).last_inbound_at;
    // The customer has written before (tests above), so the bot knows an open window.
    const before = await lastInbound();
    assert.ok(before !== null && Date.now() - before.getTime() < 3_600_000);
    try {
      assert.equal((await sim.switches({ outsideWindow: true })).outsideWindow, true);
      assert.ok(Date.now() - (await lastInbound())!.getTime() > 24 * 3_600_000, 'the bot now believes the customer wrote 25 hours ago');
      const number = await invoiceAndConfirm(sim, 1200, 'Eggs');
      await sim.waitFor('the invoice template', (s) =>
        s.chats.customer.find((m) => m.content.type === 'template' && m.content.body.includes(number) && m.status === 'read'),
      );
      await sim.waitFor('the prompt', (s) => waitingPrompt(s, number));
      await settlePrompts(sim);

      // Off again: the bot's record comes back as it was.
      assert.equal((await sim.switches({ outsideWindow: false })).outsideWindow, false);
      assert.equal((await lastInbound())?.getTime(), before.getTime());

      // On, then the customer writes: that opens the window for real and clears the switch.
      await sim.switches({ outsideWindow: true });
      assert.equal((await sim.send('customer', { text: 'hello' })).status, 200);
      assert.equal((await sim.state()).switches.outsideWindow, false, 'the customer writing reopened the window');
      assert.ok(Date.now() - (await lastInbound())!.getTime() < 60_000);
    } finally {
      await sim.switches({ outsideWindow: false });
    }
  });

  test('WhatsApp down: sends get 503, retried with backoff, and the reply reaches the merchant by SMS', async () => {
    await sim.switches({ whatsappDown: true });
    try {
      assert.equal((await sim.send('merchant', { text: 'help' })).status, 200);
      const sms = await sim.waitFor('the help reply by SMS', (s) => s.sms.merchant.find((m) => /Here's what I can do/.test(m.body)), 30_000);
      assert.ok(sms);
      const log = (await sim.state()).log.map((l) => l.text).join('\n');
      assert.match(log, /WhatsApp down: 503/);
    } finally {
      await sim.switches({ whatsappDown: false });
    }
  });

  test('a customer with several unpaid invoices who writes pay gets a list; tapping a row starts that prompt', async () => {
    await settlePrompts(sim);
    assert.equal((await sim.send('customer', { text: 'pay' })).status, 200);
    const list = await sim.waitFor('the list of unpaid invoices', (s) => s.chats.customer.filter((m) => m.from === 'bot' && m.content.type === 'list').at(-1));
    assert.equal(list.content.type, 'list');
    const rows = list.content.type === 'list' ? list.content.sections.flatMap((section) => section.rows) : [];
    assert.ok(rows.length >= 2, JSON.stringify(rows));
    const row = rows.find((r) => r.id.startsWith('pay:INV-0003~'));
    assert.ok(row, JSON.stringify(rows));
    assert.equal((await sim.send('customer', { listReply: { id: row.id, title: row.title } })).status, 200);
    await sim.waitFor('the prompt for INV-0003', (s) => waitingPrompt(s, 'INV-0003'));
    await settlePrompts(sim);
  });

  test('bad requests get a clear 4xx and change nothing', async () => {
    const empty = await sim.send('merchant', {} as never);
    assert.equal(empty.status, 400);
    assert.match(((await empty.json()) as { message: string }).message, /.+/);
    assert.equal((await sim.post('/simulator/api/phones/nobody/send', { text: 'hi' })).status, 404);
    assert.equal((await sim.post('/simulator/api/prompts/ws_CO_unknown', { action: 'cancel' })).status, 404);
    assert.equal((await sim.post('/simulator/api/prompts/ws_CO_unknown', { action: 'pin', pin: 'abc' })).status, 400);
    assert.equal((await sim.post('/simulator/api/switches', { wifi: true }, 'PUT')).status, 400);
    assert.equal((await sim.post('/simulator/api/phones/merchant/send', 'not json', 'POST')).status, 400);
    // Only JSON, and never from another site: no other page can drive the simulator.
    const plain = await fetch(`${sim.baseUrl}/simulator/api/reset`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' });
    assert.equal(plain.status, 415);
    const crossSite = await fetch(`${sim.baseUrl}/simulator/api/reset`, { method: 'POST', headers: { 'content-type': 'application/json', 'sec-fetch-site': 'cross-site' }, body: '{}' });
    assert.equal(crossSite.status, 403);
    assert.ok((await sim.state()).chats.merchant.length > 0, 'nothing was reset');
  });

  test('the sandbox answers like the providers: wrong credentials are refused', async () => {
    const graph = sim.service.deps.config.whatsapp.apiBaseUrl;
    const refused = await fetch(`${graph}/v21.0/${sim.service.deps.config.whatsapp.phoneId}/messages`, {
      method: 'POST',
      headers: { authorization: 'Bearer wrong', 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to: CUSTOMER, type: 'text', text: { body: 'x' } }),
    });
    assert.equal(refused.status, 401);
    assert.equal(((await refused.json()) as { error: { code: number } }).error.code, 190);
    // A webhook with a wrong signature is refused by the app, exactly as from Meta.
    const forged = await fetch(`${sim.baseUrl}/whatsapp/webhook`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-hub-signature-256': `sha256=${'0'.repeat(64)}` }, body: '{}' });
    assert.equal(forged.status, 401);
    const oauth = await fetch(`${sim.service.deps.config.mpesa.apiBaseUrl}/oauth/v1/generate?grant_type=client_credentials`, { headers: { authorization: 'Basic d3Jvbmc6d3Jvbmc=' } });
    assert.equal(oauth.status, 401);
  });

  test('reset clears the chats, prompts, SMS and the two numbers\' data', async () => {
    const reset = await sim.post('/simulator/api/reset');
    assert.equal(reset.status, 200);
    const state = await sim.state();
    assert.deepEqual([state.chats.merchant.length, state.chats.customer.length, state.prompts.length, state.sms.customer.length], [0, 0, 0, 0]);
    const { db } = sim.service.deps.database;
    const counts = await sql<{ merchants: number; invoices: number; conversations: number }>`
      select (select count(*)::int from merchants where phone in (${MERCHANT}, ${CUSTOMER})) as merchants,
             (select count(*)::int from invoices where customer_phone = ${CUSTOMER}) as invoices,
             (select count(*)::int from conversations where phone in (${MERCHANT}, ${CUSTOMER})) as conversations`.execute(db);
    assert.deepEqual(counts.rows[0], { merchants: 0, invoices: 0, conversations: 0 });
    // A fresh start: the merchant is onboarded again.
    await onboard(sim, 'Duka la Juma');
  });
});

describe('the sandbox answers the real Daraja client as Safaricom would', () => {
  test('OAuth, STK push with its password, a second push while one waits, query while waiting, and the prompt timing out by itself (1037)', async () => {
    const callbacks: unknown[] = [];
    const app = serve({
      port: 0,
      hostname: '127.0.0.1',
      fetch: async (request: Request) => {
        callbacks.push({ path: new URL(request.url).pathname, body: await request.json() });
        return Response.json({ ResultCode: 0, ResultDesc: 'Accepted' });
      },
    });
    await new Promise((resolve) => app.once('listening', resolve));
    const credentials = { whatsappToken: 'w', phoneId: '1', appSecret: 'a', consumerKey: 'ck', consumerSecret: 'cs', shortcode: '174379', passkey: 'pk' };
    const sandbox = await startSandbox({ credentials, phones: { merchant: MERCHANT, customer: CUSTOMER }, demoPin: '1234', promptTimeoutMs: 2_000, logger: captureLogs().logger });
    sandbox.setAppUrl(`http://127.0.0.1:${(app.address() as AddressInfo).port}`);
    try {
      const daraja = createDarajaClient({ baseUrl: `${sandbox.baseUrl}/daraja`, ...credentials, transactionType: 'CustomerPayBillOnline', partyB: undefined, timeoutMs: 5_000 });
      const push = { amount: 1500, phone: CUSTOMER, accountReference: 'INV-0001', description: 'Website', callbackUrl: 'http://127.0.0.1:1/payments/stk/callback/token123' };
      const accepted = await daraja.stkPush(push);
      assert.match(accepted.checkoutRequestId, /^ws_CO_\d{14}/);
      // M-PESA holds one prompt per phone at a time.
      await assert.rejects(daraja.stkPush(push), (error: unknown) => error instanceof ProviderError && error.code === '500.001.1001' && error.retryable);
      assert.deepEqual(await daraja.stkQuery(accepted.checkoutRequestId), { state: 'pending' });

      // Nobody answers: the prompt times out by itself, and the callback says 1037. (Its time-out
      // leaves room for the second push and the query above on a loaded machine.)
      const deadline = performance.now() + 15_000;
      while (callbacks.length === 0) {
        assert.ok(performance.now() < deadline, 'a callback came');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.deepEqual(callbacks[0], {
        path: '/payments/stk/callback/token123',
        body: { Body: { stkCallback: { MerchantRequestID: (callbacks[0] as { body: { Body: { stkCallback: { MerchantRequestID: string } } } }).body.Body.stkCallback.MerchantRequestID, CheckoutRequestID: accepted.checkoutRequestId, ResultCode: 1037, ResultDesc: 'DS timeout user cannot be reached' } } },
      });
      assert.deepEqual(await daraja.stkQuery(accepted.checkoutRequestId), { state: 'completed', resultCode: 1037, resultDesc: 'DS timeout user cannot be reached' });
      assert.equal(sandbox.state().prompts[0]?.state, 'timed_out');

      // A wrong passkey is refused like Daraja refuses it.
      const wrong = createDarajaClient({ baseUrl: `${sandbox.baseUrl}/daraja`, ...credentials, passkey: 'other', transactionType: 'CustomerPayBillOnline', partyB: undefined, timeoutMs: 5_000 });
      await assert.rejects(wrong.stkPush({ ...push, phone: MERCHANT }), (error: unknown) => error instanceof ProviderError && error.code === '400.002.02' && !error.retryable);
    } finally {
      await sandbox.close();
      await new Promise<void>((resolve) => app.close(() => resolve()));
    }
  });
});

describe('simulator mode is off when it must be', () => {
  test('any provider credential, SIMULATOR=off, or production turns it off', async () => {
    assert.equal(loadConfig({}).simulator, true);
    assert.equal(loadConfig({ WABA_TOKEN: 'EAAG-token' }).simulator, false);
    assert.equal(loadConfig({ MPESA_CONSUMER_KEY: 'key' }).simulator, false);
    assert.equal(loadConfig({ SMS_API_KEY: 'key' }).simulator, false);
    assert.equal(loadConfig({ SIMULATOR: 'off' }).simulator, false);
    assert.throws(() => loadConfig({ SIMULATOR: 'on' }), /SIMULATOR must be auto or off/);
    // Production without credentials does not start at all; with them the simulator is off.
    assert.throws(() => loadConfig({ APP_ENV: 'production' }), /WABA_TOKEN is required/);
    const production = loadConfig(productionEnv('x'.repeat(32)));
    assert.equal(production.simulator, false);
    // Even a hand-made config cannot start it in production.
    await assert.rejects(startSimulator({ ...production, simulator: true }, captureLogs().logger), /only in development/);
  });

  test('with credentials the simulator routes do not exist', async () => {
    const database = await createTestDatabase();
    try {
      const { app } = buildTestApp(database, { env: { WABA_TOKEN: 'EAAG-token', WABA_PHONE_ID: '123', WABA_APP_SECRET: 's' } });
      for (const path of ['/simulator', '/simulator/api/state', '/simulator/assets/simulator.js']) {
        assert.equal((await app.request(path)).status, 404, path);
      }
      assert.equal((await app.request('/simulator/api/reset', { method: 'POST' })).status, 404);
      // Even a config that says "simulator" gets no routes unless the service started the sandbox.
      const plain = createApp({ ...buildTestApp(database).deps, simulator: undefined });
      assert.equal((await plain.request('/simulator')).status, 404);
    } finally {
      await database.dispose();
    }
  });
});
