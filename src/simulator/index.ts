/**
 * Simulator mode: with no provider accounts in development, `startService` starts the
 * sandbox (sandbox.ts) and runs the bot against it with simulated credentials, so the real
 * WhatsApp and Daraja clients, webhook signature checks and callback tokens all run.
 * SMS goes to the sandbox's inbox (Africa's Talking's SDK hard-codes its hosts).
 */
import { randomBytes } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Config } from '../config.js';
import type { Database } from '../db/schema.js';
import type { Logger } from '../logger.js';
import type { Switches, Who } from './contract.js';
import { SIMULATOR_TEMPLATES, startSandbox, type Sandbox } from './sandbox.js';

/** The two simulated phones (Safaricom numbers nobody owns in the demo). */
export const SIMULATOR_PHONES: Readonly<Record<Who, string>> = { merchant: '254711000001', customer: '254722000002' };
export const DEMO_PIN = '1234';
const PROMPT_TIMEOUT_MS = 60_000;

export type Simulator = {
  readonly sandbox: Sandbox;
  readonly phones: Readonly<Record<Who, string>>;
  /** Sets switches; "outside the window" also dates the customer's last message 25 hours back for the bot. */
  setSwitches(db: Kysely<Database>, change: Partial<Switches>): Promise<Switches>;
  /** Clears the sandbox and every row the two simulated numbers own in the database. */
  reset(db: Kysely<Database>): Promise<void>;
  close(): Promise<void>;
};

export type SimulatorOptions = { promptTimeoutMs?: number; statusDelaysMs?: readonly [number, number, number] };

const secret = () => randomBytes(24).toString('base64url');

/** Starts the sandbox and returns the config that points the bot at it. */
export async function startSimulator(config: Config, logger: Logger, options: SimulatorOptions = {}): Promise<{ config: Config; simulator: Simulator }> {
  if (!config.simulator || config.appEnv === 'production') throw new Error('the simulator runs only in development without provider credentials');
  const credentials = {
    whatsappToken: `SIM${secret()}`,
    phoneId: '100000000000001',
    appSecret: secret(),
    consumerKey: secret(),
    consumerSecret: secret(),
    shortcode: '174379',
    passkey: secret(),
  };
  const sandbox = await startSandbox({
    credentials,
    phones: SIMULATOR_PHONES,
    demoPin: DEMO_PIN,
    promptTimeoutMs: options.promptTimeoutMs ?? PROMPT_TIMEOUT_MS,
    ...(options.statusDelaysMs === undefined ? {} : { statusDelaysMs: options.statusDelaysMs }),
    logger,
  });
  const local = `http://127.0.0.1:${config.port}`;
  const simulated: Config = Object.freeze({
    ...config,
    whatsapp: Object.freeze({
      ...config.whatsapp,
      token: credentials.whatsappToken,
      phoneId: credentials.phoneId,
      verifyToken: secret(),
      appSecret: credentials.appSecret,
      apiBaseUrl: `${sandbox.baseUrl}/graph`,
      templates: Object.freeze({ invoice: SIMULATOR_TEMPLATES.invoice.name, receipt: SIMULATOR_TEMPLATES.receipt.name, reminder: SIMULATOR_TEMPLATES.reminder.name }),
      templateLanguage: 'en',
    }),
    sms: Object.freeze({ ...config.sms, apiKey: 'simulator', username: 'simulator', useSandbox: false }),
    mpesa: Object.freeze({
      ...config.mpesa,
      consumerKey: credentials.consumerKey,
      consumerSecret: credentials.consumerSecret,
      shortcode: credentials.shortcode,
      passkey: credentials.passkey,
      // The sandbox posts callbacks to this path on wherever the app listens.
      callbackUrl: `${local}/payments/stk/callback`,
      apiBaseUrl: `${sandbox.baseUrl}/daraja`,
      environment: 'sandbox' as const,
      transactionType: 'CustomerPayBillOnline' as const,
      partyB: undefined,
      callbackAllowedIps: Object.freeze([]),
    }),
    stats: Object.freeze({ ...config.stats, publicBaseUrl: config.stats.publicBaseUrl ?? (config.port === 0 ? undefined : `http://localhost:${config.port}`) }),
  });
  const phones = Object.values(SIMULATOR_PHONES);
  /** The customer's real last-inbound time while "outside the window" pretends otherwise. */
  let savedLastInbound: Date | null | undefined;
  return {
    config: simulated,
    simulator: {
      sandbox,
      phones: SIMULATOR_PHONES,
      async setSwitches(db, change) {
        const wasOutside = sandbox.state().switches.outsideWindow;
        if (change.outsideWindow === true && !wasOutside) {
          // The bot's own record of the customer's last message goes 25 hours back, and comes
          // back when the switch is turned off (unless the customer wrote since).
          const before = await db.selectFrom('conversations').select('last_inbound_at').where('phone', '=', SIMULATOR_PHONES.customer).executeTakeFirst();
          savedLastInbound = before?.last_inbound_at ?? null;
          await db
            .updateTable('conversations')
            .set({ last_inbound_at: sql<Date>`now() - interval '25 hours'`, updated_at: sql<Date>`now()` })
            .where('phone', '=', SIMULATOR_PHONES.customer)
            .execute();
        }
        if (change.outsideWindow === false && wasOutside && savedLastInbound !== undefined) {
          await db
            .updateTable('conversations')
            .set({ last_inbound_at: savedLastInbound, updated_at: sql<Date>`now()` })
            .where('phone', '=', SIMULATOR_PHONES.customer)
            .execute();
          savedLastInbound = undefined;
        }
        return sandbox.setSwitches(change);
      },
      async reset(db) {
        savedLastInbound = undefined;
        await db.transaction().execute(async (trx) => {
          const merchantIds = trx.selectFrom('merchants').select('id').where('phone', 'in', phones);
          const invoiceIds = trx
            .selectFrom('invoices')
            .select('id')
            .where((eb) => eb.or([eb('merchant_id', 'in', merchantIds), eb('customer_phone', 'in', phones)]));
          await trx.deleteFrom('outbound_messages').where((eb) => eb.or([eb('recipient', 'in', phones), eb('invoice_id', 'in', invoiceIds)])).execute();
          await trx.deleteFrom('payment_attempts').where('invoice_id', 'in', invoiceIds).execute();
          await trx.deleteFrom('invoices').where('id', 'in', invoiceIds).execute();
          await trx.deleteFrom('merchants').where('phone', 'in', phones).execute();
          await trx.deleteFrom('conversations').where('phone', 'in', phones).execute();
          // The raw events the two numbers sent (messages), or that were about them (statuses,
          // SMS reports, M-PESA callbacks): the number appears in the stored payload.
          for (const phone of phones) {
            await trx.deleteFrom('inbound_events').where(sql<boolean>`payload::text like ${`%${phone}%`}`).execute();
          }
        });
        // After the database: a failed reset leaves both as they were. (A delivery already in
        // flight may still add a bubble just after.)
        sandbox.reset();
      },
      close: () => sandbox.close(),
    },
  };
}
