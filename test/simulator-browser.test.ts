/**
 * The simulator in a real browser (Debian's chromium driven by playwright-core) against the
 * whole service in simulator mode on 127.0.0.1: the full story (onboard, one-line invoice,
 * Send button, the customer pays with the PIN, both see receipts), then a fallback (customer
 * not on WhatsApp -> the SMS inbox), the language switch and the phone-sized layout. Every
 * request outside the app is blocked and must not happen.
 * Screenshots: test-artifacts/simulator.png and test-artifacts/simulator-mobile.png.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core';
import { startSimulatorService, type SimulatorRun } from './helpers/simulator.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
const missingChromium = !existsSync(CHROMIUM);
// In CI a missing browser is a failure (.ci/run installs it), elsewhere a skip with the fix.
const skip = missingChromium && process.env.CI !== 'true' ? `${CHROMIUM} is missing: apt-get install -y chromium` : false;
const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url));
const WAIT = { timeout: 20_000 };

let sim: SimulatorRun;
let browser: Browser;
const escaped: string[] = [];
const pageErrors: string[] = [];

before(async () => {
  if (skip !== false) return;
  sim = await startSimulatorService();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  if (skip !== false) return;
  await browser?.close();
  await sim?.stop();
});

/** A context that lets through only requests to the app (the page must work offline). */
async function open(viewport: { width: number; height: number }): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport });
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.protocol === 'data:' || url.origin === sim.baseUrl) return route.continue();
    escaped.push(url.toString());
    return route.abort();
  });
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error') pageErrors.push(message.text());
  });
  page.on('pageerror', (error) => pageErrors.push(error.message));
  await page.goto(`${sim.baseUrl}/simulator`);
  await page.waitForSelector('body[data-ready="true"]', WAIT);
  return { context, page };
}

function phone(page: Page, who: 'merchant' | 'customer'): Locator {
  return page.locator(`[data-phone="${who}"]`);
}

async function type(page: Page, who: 'merchant' | 'customer', text: string): Promise<void> {
  const input = phone(page, who).locator('form.composer input[name="message"]');
  await input.fill(text);
  await phone(page, who).locator('form.composer button[type="submit"]').click();
}

/** Waits for a bot bubble on `who`'s phone whose text matches. */
async function botSays(page: Page, who: 'merchant' | 'customer', pattern: RegExp): Promise<Locator> {
  const bubble = phone(page, who).locator('.bubble[data-from="bot"]').filter({ hasText: pattern }).last();
  await bubble.waitFor(WAIT);
  return bubble;
}

test('the full story in the browser: onboard, one-line invoice, Send, PIN, receipts on both phones; then a fallback to SMS', { skip, timeout: 120_000 }, async () => {
  const { context, page } = await open({ width: 1280, height: 900 });
  try {
    // Both phones side by side on a wide screen.
    assert.ok(await phone(page, 'merchant').isVisible());
    assert.ok(await phone(page, 'customer').isVisible());

    await type(page, 'merchant', 'hi');
    await botSays(page, 'merchant', /what is your business called/i);
    await type(page, 'merchant', 'Mama Mboga Supplies');
    await botSays(page, 'merchant', /Welcome, Mama Mboga Supplies/);

    await type(page, 'merchant', 'invoice 0722 000 002 1500 Website design');
    const confirm = await botSays(page, 'merchant', /Please check this invoice/);
    await confirm.locator('button[data-button-id="confirm_send"]').click();
    await botSays(page, 'merchant', /INV-0001\*? for \*?KES 1,500/);

    // The invoice reaches the customer's WhatsApp, with delivery ticks from the status webhooks.
    const invoice = await botSays(page, 'customer', /sent you invoice INV-0001 for KES 1,500: Website design/);
    await invoice.locator('.ticks[data-status="read"]').waitFor(WAIT);

    // The M-PESA prompt: the demo PIN pays.
    const prompt = phone(page, 'customer').locator('.mpesa-prompt[data-state="waiting"]');
    await prompt.waitFor(WAIT);
    assert.match((await prompt.textContent()) ?? '', /1,?500/);
    await prompt.locator('input[name="pin"]').fill((await sim.state()).demoPin);
    await prompt.locator('button[data-action="pay"]').click();

    const state = await sim.waitFor('the paid prompt', (s) => s.prompts.find((p) => p.state === 'paid' && p.callback === 'posted'));
    const receipt = state.receipt!;
    await botSays(page, 'merchant', new RegExp(receipt));
    await botSays(page, 'customer', new RegExp(`Payment received[\\s\\S]*${receipt}`));
    await page.screenshot({ path: `${ARTIFACTS}simulator.png`, fullPage: true });

    // Fallback: the customer is not on WhatsApp -> Meta reports 131026 -> the invoice comes by SMS.
    await page.locator('input[type="checkbox"][name="notOnWhatsApp"]').check();
    await sim.waitFor('the switch', (s) => (s.switches.notOnWhatsApp ? true : undefined));
    await type(page, 'merchant', 'invoice 0722 000 002 2500 Cement');
    const second = await botSays(page, 'merchant', /Please check this invoice[\s\S]*2,500/);
    await second.locator('button[data-button-id="confirm_send"]').click();
    await page.locator('[data-sms-inbox="customer"] .sms').filter({ hasText: /INV-0002/ }).waitFor(WAIT);
    assert.match((await page.locator('[data-sms-inbox="customer"] .sms').filter({ hasText: /INV-0002/ }).textContent()) ?? '', /KES 2,500/);
    await phone(page, 'customer').locator('.bubble[data-from="bot"]').filter({ hasText: /INV-0002/ }).locator('.ticks[data-status="failed"]').waitFor(WAIT);

    // Kiswahili labels.
    await page.locator('button[data-lang="sw"]').click();
    assert.equal(await page.evaluate('document.documentElement.lang'), 'sw');
    await page.locator('button[data-lang="en"]').click();
    assert.equal(await page.evaluate('document.documentElement.lang'), 'en');

    // The prompt for INV-0002 is still waiting; cancel it from the page (1032).
    const waiting = phone(page, 'customer').locator('.mpesa-prompt[data-state="waiting"]');
    await waiting.waitFor(WAIT);
    await waiting.locator('button[data-action="cancel"]').click();
    await sim.waitFor('the cancelled prompt', (s) => s.prompts.find((p) => p.accountReference === 'INV-0002' && p.state === 'cancelled'));

    assert.deepEqual(pageErrors, []);
    assert.deepEqual(escaped, []);
  } finally {
    await context.close();
  }
});

test('on a phone-sized screen one phone shows at a time, with tabs; reset empties both', { skip, timeout: 60_000 }, async () => {
  const { context, page } = await open({ width: 360, height: 740 });
  try {
    await page.locator('button[data-show="merchant"]').click();
    assert.ok(await phone(page, 'merchant').isVisible());
    assert.ok(!(await phone(page, 'customer').isVisible()));
    await page.locator('button[data-show="customer"]').click();
    assert.ok(await phone(page, 'customer').isVisible());
    assert.ok(!(await phone(page, 'merchant').isVisible()));
    await page.screenshot({ path: `${ARTIFACTS}simulator-mobile.png` });

    await page.locator('button[data-action="reset"]').click();
    await sim.waitFor('the reset', (s) => (s.chats.merchant.length === 0 && s.chats.customer.length === 0 ? true : undefined));
    // (The page's CSP forbids eval, so poll from here rather than with waitForFunction.)
    const deadline = performance.now() + WAIT.timeout;
    while ((await page.locator('.bubble').count()) > 0) {
      assert.ok(performance.now() < deadline, 'the page emptied both chats');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(escaped, []);
  } finally {
    await context.close();
  }
});
