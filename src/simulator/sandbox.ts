/**
 * The simulator's sandbox: an in-process stand-in for the WhatsApp Cloud API (Graph),
 * Safaricom Daraja and Africa's Talking SMS, so `npm start` with no accounts shows the whole
 * product. The bot's real clients talk HTTP to it on 127.0.0.1 (never exposed); it answers
 * like the real APIs, sends signed webhooks and Daraja-shaped callbacks back to the app's
 * real endpoints, and keeps what the two simulated phones show in memory.
 *
 * What the switches do, as the real providers would:
 * - notOnWhatsApp: sends to the customer are accepted, then a `failed` status with 131026.
 * - outsideWindow: the customer last wrote 25 hours ago. As Meta does then, free-form sends to
 *   the customer are accepted, then `failed` with 131047; templates go through. The
 *   customer's next message opens the window again (and clears the switch).
 * - whatsappDown: every send answers HTTP 503.
 * - callbackLost: Safaricom never posts the callback; the STK query still tells the truth.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { Hono, type Context } from 'hono';
import { z } from 'zod';
import { formatPhone, type Msisdn } from '../domain/parse.js';
import type { Logger } from '../logger.js';
import { darajaTimestamp, stkPassword } from '../providers/mpesa/client.js';
import type { SmsClient } from '../providers/sms/client.js';
import { signBody } from '../providers/whatsapp/signature.js';
import type { ChatContent, ChatItem, LogItem, Prompt, PromptAction, PromptState, SendRequest, SimulatorState, SmsItem, Switches, Who } from './contract.js';

export type SandboxCredentials = {
  whatsappToken: string;
  phoneId: string;
  appSecret: string;
  consumerKey: string;
  consumerSecret: string;
  shortcode: string;
  passkey: string;
};

export type SandboxOptions = {
  credentials: SandboxCredentials;
  phones: Readonly<Record<Who, string>>;
  demoPin: string;
  /** A waiting STK prompt times out (1037) after this long. */
  promptTimeoutMs: number;
  /** Status webhooks follow an accepted send after these delays (sent, delivered, read). */
  statusDelaysMs?: readonly [number, number, number];
  logger: Logger;
};

export type Sandbox = {
  /** Graph lives under `${baseUrl}/graph`, Daraja under `${baseUrl}/daraja`. */
  readonly baseUrl: string;
  /** Where the app listens; webhooks and callbacks go there. */
  setAppUrl(url: string): void;
  readonly sms: SmsClient;
  state(): SimulatorState;
  /** Sends what a phone typed or tapped to the app as a signed webhook; false if the app refused it. */
  send(who: Who, request: SendRequest): Promise<boolean>;
  answerPrompt(checkoutRequestId: string, action: PromptAction): Promise<PromptState | undefined>;
  setSwitches(change: Partial<Switches>): Switches;
  reset(): void;
  /** Stops sending status webhooks and timing out prompts (the app is stopping). */
  pause(): void;
  close(): Promise<void>;
};

/** Approved templates, as Meta stores them: the names the simulator's config uses. */
export const SIMULATOR_TEMPLATES = {
  invoice: { name: 'invoiceiq_invoice', body: '{{1}} sent you invoice {{2}} for {{3}}: {{4}}. Tap Pay to pay with M-PESA.', button: 'Pay' },
  receipt: { name: 'invoiceiq_receipt', body: 'Payment received. {{1}}, invoice {{2}}, {{3}}. M-PESA receipt {{4}}. Thank you!', button: undefined },
  reminder: { name: 'invoiceiq_reminder', body: 'Reminder from {{1}}: invoice {{2}} for {{3}} is due {{4}}. Tap Pay to pay with M-PESA.', button: 'Pay' },
} as const;

const LOG_LIMIT = 60;
const tickRank: Record<ChatItem['status'], number> = { pending: 0, failed: 1, sent: 1, delivered: 2, read: 3 };
const CHAT_LIMIT = 300;

// ---- Request bodies the sandbox reads (what our clients send, checked as Meta / Safaricom would).

const GraphSend = z.looseObject({
  messaging_product: z.literal('whatsapp'),
  to: z.string().regex(/^\d{8,15}$/),
  type: z.enum(['text', 'interactive', 'template']),
  text: z.looseObject({ body: z.string().min(1).max(4096) }).optional(),
  interactive: z
    .looseObject({
      type: z.enum(['button', 'list']),
      body: z.looseObject({ text: z.string().min(1).max(1024) }),
      footer: z.looseObject({ text: z.string() }).optional(),
      action: z.looseObject({
        buttons: z.array(z.looseObject({ reply: z.looseObject({ id: z.string(), title: z.string().max(20) }) })).min(1).max(3).optional(),
        button: z.string().max(20).optional(),
        sections: z
          .array(z.looseObject({ title: z.string().optional(), rows: z.array(z.looseObject({ id: z.string(), title: z.string().max(24), description: z.string().optional() })) }))
          .optional(),
      }),
    })
    .optional(),
  template: z
    .looseObject({
      name: z.string(),
      language: z.looseObject({ code: z.string() }),
      components: z
        .array(
          z.looseObject({
            type: z.string(),
            parameters: z.array(z.looseObject({ type: z.string(), text: z.string().optional(), payload: z.string().optional() })).optional(),
          }),
        )
        .optional(),
    })
    .optional(),
});
type GraphSend = z.infer<typeof GraphSend>;

const digits = z.union([z.string().regex(/^\d+$/), z.number().int().nonnegative()]).transform((v) => String(v));

const StkPush = z.looseObject({
  BusinessShortCode: digits,
  Password: z.string(),
  Timestamp: z.string().regex(/^\d{14}$/),
  TransactionType: z.enum(['CustomerPayBillOnline', 'CustomerBuyGoodsOnline']),
  Amount: z.union([z.number(), z.string()]).transform((v) => Number(v)).pipe(z.number().int().min(1).max(250_000)),
  PartyA: digits,
  PartyB: digits,
  PhoneNumber: digits,
  CallBackURL: z.url(),
  AccountReference: z.string().min(1).max(12),
  TransactionDesc: z.string().min(1).max(13),
});

const StkQuery = z.looseObject({ BusinessShortCode: digits, Password: z.string(), Timestamp: z.string(), CheckoutRequestID: z.string() });

type StoredPrompt = Prompt & { merchantRequestId: string; callbackUrl: string; resultCode: number | null; resultDesc: string; timer: NodeJS.Timeout | undefined };
type StoredChat = ChatItem & { wamid: string | undefined };

const resultTexts: Record<Exclude<PromptState, 'waiting'>, { code: number; desc: string }> = {
  paid: { code: 0, desc: 'The service request is processed successfully.' },
  wrong_pin: { code: 2001, desc: 'The initiator information is invalid.' },
  cancelled: { code: 1032, desc: 'Request cancelled by user' },
  timed_out: { code: 1037, desc: 'DS timeout user cannot be reached' },
};

function receiptNumber(): string {
  const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZ0123456789';
  const bytes = randomBytes(8);
  return `SK${Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('')}`;
}

function fill(template: string, parameters: readonly string[]): string {
  return template.replace(/\{\{(\d+)\}\}/g, (_, n: string) => parameters[Number(n) - 1] ?? '');
}

export async function startSandbox(options: SandboxOptions): Promise<Sandbox> {
  const { credentials: creds, phones, logger } = options;
  const statusDelays = options.statusDelaysMs ?? [60, 500, 1500];
  let appUrl: string | undefined;
  let switches: Switches = { notOnWhatsApp: false, outsideWindow: false, callbackLost: false, whatsappDown: false };
  let chats: Record<Who, StoredChat[]> = { merchant: [], customer: [] };
  let inbox: Record<Who, SmsItem[]> = { merchant: [], customer: [] };
  let prompts: StoredPrompt[] = [];
  let log: LogItem[] = [];
  const tokens = new Set<string>();
  const timers = new Set<NodeJS.Timeout>();
  let generation = 0;
  let counter = 0;
  const nextId = (prefix: string) => `${prefix}${(++counter).toString(36).padStart(4, '0')}`;

  const whoIs = (phone: string): Who | undefined => (phone === phones.merchant ? 'merchant' : phone === phones.customer ? 'customer' : undefined);
  const note = (text: string) => {
    log = [...log, { id: nextId('l'), at: new Date().toISOString(), text }].slice(-LOG_LIMIT);
  };
  const later = (ms: number, run: () => void) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      run();
    }, ms);
    timer.unref();
    timers.add(timer);
    return timer;
  };
  const addChat = (who: Who, item: StoredChat) => {
    chats = { ...chats, [who]: [...chats[who], item].slice(-CHAT_LIMIT) };
  };
  const updateChat = (id: string, change: Partial<StoredChat>, when: (current: ChatItem['status']) => boolean = () => true) => {
    for (const who of ['merchant', 'customer'] as const) {
      chats = { ...chats, [who]: chats[who].map((item) => (item.id === id && when(item.status) ? { ...item, ...change } : item)) };
    }
  };

  /** POSTs JSON to the app; the HTTP status, or undefined when the app did not answer. */
  async function postToApp(path: string, body: string, headers: Record<string, string> = {}): Promise<number | undefined> {
    if (appUrl === undefined) return undefined;
    try {
      const response = await fetch(`${appUrl}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body,
        signal: AbortSignal.timeout(10_000),
      });
      await response.arrayBuffer();
      return response.status;
    } catch (error) {
      logger.warn({ path, error: error instanceof Error ? error.message : String(error) }, 'simulator could not reach the app');
      return undefined;
    }
  }

  function envelope(value: Record<string, unknown>): Record<string, unknown> {
    return {
      object: 'whatsapp_business_account',
      entry: [
        {
          id: 'SIMULATOR-WABA',
          changes: [{ field: 'messages', value: { messaging_product: 'whatsapp', metadata: { display_phone_number: '254700000000', phone_number_id: creds.phoneId }, ...value } }],
        },
      ],
    };
  }

  async function webhook(payload: Record<string, unknown>): Promise<number | undefined> {
    const body = JSON.stringify(payload);
    return postToApp('/whatsapp/webhook', body, { 'x-hub-signature-256': signBody(body, creds.appSecret) });
  }

  // ---- Graph

  /** The chat bubble for what the bot sent, or an error Meta would give. */
  function render(send: GraphSend): { content: ChatContent } | { error: { status: number; code: number; message: string } } {
    if (send.type === 'text' && send.text !== undefined) return { content: { type: 'text', body: send.text.body } };
    if (send.type === 'interactive' && send.interactive !== undefined) {
      const i = send.interactive;
      if (i.type === 'button' && i.action.buttons !== undefined) {
        return {
          content: {
            type: 'buttons',
            body: i.body.text,
            ...(i.footer === undefined ? {} : { footer: i.footer.text }),
            buttons: i.action.buttons.map((b) => ({ id: b.reply.id, title: b.reply.title })),
          },
        };
      }
      if (i.type === 'list' && i.action.button !== undefined && i.action.sections !== undefined) {
        return {
          content: {
            type: 'list',
            body: i.body.text,
            button: i.action.button,
            sections: i.action.sections.map((s) => ({
              ...(s.title === undefined ? {} : { title: s.title }),
              rows: s.rows.map((r) => ({ id: r.id, title: r.title, ...(r.description === undefined ? {} : { description: r.description }) })),
            })),
          },
        };
      }
    }
    if (send.type === 'template' && send.template !== undefined) {
      const approved = Object.values(SIMULATOR_TEMPLATES).find((t) => t.name === send.template?.name);
      if (approved === undefined) return { error: { status: 404, code: 132001, message: 'Template name does not exist in the translation' } };
      const components = send.template.components ?? [];
      const parameters = (components.find((c) => c.type === 'body')?.parameters ?? []).map((p) => p.text ?? '');
      const expected = (approved.body.match(/\{\{\d+\}\}/g) ?? []).length;
      if (parameters.length !== expected) return { error: { status: 400, code: 132000, message: 'Number of parameters does not match the expected number of params' } };
      const payload = components.find((c) => c.type === 'button')?.parameters?.[0]?.payload;
      return {
        content: {
          type: 'template',
          name: approved.name,
          body: fill(approved.body, parameters),
          buttons: approved.button !== undefined && payload !== undefined ? [{ payload, title: approved.button }] : [],
        },
      };
    }
    return { error: { status: 400, code: 100, message: 'Invalid parameter' } };
  }

  async function sendStatus(itemId: string, wamid: string, to: string, status: 'sent' | 'delivered' | 'read' | 'failed', code?: number): Promise<void> {
    const answered = await webhook(
      envelope({
        statuses: [
          {
            id: wamid,
            status,
            timestamp: String(Math.floor(Date.now() / 1000)),
            recipient_id: to,
            ...(code === undefined ? {} : { errors: [{ code, title: code === 131026 ? 'Message undeliverable' : 'Re-engagement message', message: 'Message failed to send', error_data: { details: `code ${code}` } }] }),
          },
        ],
      }),
    );
    // Status webhooks may be answered out of order: a bubble's ticks only move forward.
    if (answered === 200) updateChat(itemId, { status }, (current) => status === 'failed' || tickRank[status] > tickRank[current]);
  }

  function graphError(c: Context, status: number, code: number, message: string) {
    return c.json({ error: { message, type: 'OAuthException', code, fbtrace_id: `SIM${randomUUID().slice(0, 8)}` } }, status as 400);
  }

  const app = new Hono();

  app.post('/graph/:version/:phoneId/messages', async (c) => {
    if (c.req.header('authorization') !== `Bearer ${creds.whatsappToken}`) return graphError(c, 401, 190, 'Invalid OAuth access token.');
    if (c.req.param('phoneId') !== creds.phoneId) return graphError(c, 400, 100, 'Unsupported post request. Object does not exist.');
    const parsed = GraphSend.safeParse(await c.req.json().catch(() => null));
    if (!parsed.success) return graphError(c, 400, 100, 'Invalid parameter');
    const send = parsed.data;
    if (switches.whatsappDown) {
      note(`WhatsApp down: 503 to a message for ${formatPhone(send.to as Msisdn)}`);
      return graphError(c, 503, 2, 'Service temporarily unavailable');
    }
    const rendered = render(send);
    if ('error' in rendered) {
      note(`WhatsApp refused a message: ${rendered.error.code} ${rendered.error.message}`);
      return graphError(c, rendered.error.status, rendered.error.code, rendered.error.message);
    }
    const wamid = `wamid.SIM${randomBytes(12).toString('hex').toUpperCase()}`;
    const who = whoIs(send.to);
    const at = generation;
    if (who !== undefined) {
      const id = nextId('m');
      addChat(who, { id, wamid, from: 'bot', at: new Date().toISOString(), content: rendered.content, status: 'pending' });
      const failure =
        who === 'customer' && switches.notOnWhatsApp ? 131026 : who === 'customer' && switches.outsideWindow && send.type !== 'template' ? 131047 : undefined;
      if (failure === undefined && send.type === 'template') note(`Template ${send.template?.name ?? ''} sent: ${who} is outside the 24-hour window`);
      if (failure !== undefined) {
        note(failure === 131026 ? 'Customer not on WhatsApp: Meta reports 131026 (undeliverable)' : 'Outside the 24-hour window: Meta reports 131047 for a free-form message');
        later(statusDelays[0], () => void (at === generation && sendStatus(id, wamid, send.to, 'failed', failure)));
      } else {
        const [sent, delivered, read] = statusDelays;
        later(sent, () => void (at === generation && sendStatus(id, wamid, send.to, 'sent')));
        later(delivered, () => void (at === generation && sendStatus(id, wamid, send.to, 'delivered')));
        later(read, () => void (at === generation && sendStatus(id, wamid, send.to, 'read')));
      }
    }
    return c.json({ messaging_product: 'whatsapp', contacts: [{ input: send.to, wa_id: send.to }], messages: [{ id: wamid }] });
  });

  // ---- Daraja

  function darajaError(c: Context, status: number, errorCode: string, errorMessage: string) {
    return c.json({ requestId: `${randomBytes(4).toString('hex')}-sim`, errorCode, errorMessage }, status as 400);
  }
  const bearer = (c: Context) => /^Bearer (\S+)$/.exec(c.req.header('authorization') ?? '')?.[1];
  const validPassword = (password: string, timestamp: string) => password === stkPassword(creds.shortcode, creds.passkey, timestamp);

  app.get('/daraja/oauth/v1/generate', (c) => {
    const expected = `Basic ${Buffer.from(`${creds.consumerKey}:${creds.consumerSecret}`).toString('base64')}`;
    if (c.req.header('authorization') !== expected) return c.body(null, 401);
    if (c.req.query('grant_type') !== 'client_credentials') return darajaError(c, 400, '400.008.02', 'Invalid grant type passed');
    const token = randomBytes(16).toString('base64url');
    tokens.add(token);
    return c.json({ access_token: token, expires_in: '3599' });
  });

  app.post('/daraja/mpesa/stkpush/v1/processrequest', async (c) => {
    if (!tokens.has(bearer(c) ?? '')) return darajaError(c, 404, '404.001.03', 'Invalid Access Token');
    const parsed = StkPush.safeParse(await c.req.json().catch(() => null));
    if (!parsed.success) {
      const field = parsed.error.issues[0]?.path.join('.') ?? 'body';
      return darajaError(c, 400, '400.002.02', `Bad Request - Invalid ${field}`);
    }
    const push = parsed.data;
    if (push.BusinessShortCode !== creds.shortcode || !validPassword(push.Password, push.Timestamp)) {
      return darajaError(c, 400, '400.002.02', 'Bad Request - Invalid Password');
    }
    if (prompts.some((p) => p.phone === push.PhoneNumber && p.state === 'waiting')) {
      note('M-PESA: a prompt is already waiting on this phone (500.001.1001)');
      return darajaError(c, 500, '500.001.1001', 'Unable to lock subscriber, a transaction is already in process for the current subscriber');
    }
    const checkoutRequestId = `ws_CO_${darajaTimestamp(new Date())}${randomBytes(5).toString('hex')}`;
    const merchantRequestId = `${randomBytes(2).readUInt16BE()}-${randomBytes(3).readUIntBE(0, 3)}-1`;
    const created = new Date();
    const prompt: StoredPrompt = {
      checkoutRequestId,
      merchantRequestId,
      who: whoIs(push.PhoneNumber) ?? 'customer',
      phone: push.PhoneNumber,
      amount: push.Amount,
      accountReference: push.AccountReference,
      description: push.TransactionDesc,
      state: 'waiting',
      createdAt: created.toISOString(),
      expiresAt: new Date(created.getTime() + options.promptTimeoutMs).toISOString(),
      callback: 'none',
      callbackUrl: push.CallBackURL,
      resultCode: null,
      resultDesc: '',
      timer: undefined,
    };
    prompt.timer = later(options.promptTimeoutMs, () => void answerPrompt(checkoutRequestId, { action: 'timeout' }));
    prompts = [...prompts, prompt].slice(-50);
    note(`M-PESA: STK push of KES ${push.Amount} for ${push.AccountReference} sent to ${formatPhone(push.PhoneNumber as Msisdn)}`);
    return c.json({
      MerchantRequestID: merchantRequestId,
      CheckoutRequestID: checkoutRequestId,
      ResponseCode: '0',
      ResponseDescription: 'Success. Request accepted for processing',
      CustomerMessage: 'Success. Request accepted for processing',
    });
  });

  app.post('/daraja/mpesa/stkpushquery/v1/query', async (c) => {
    if (!tokens.has(bearer(c) ?? '')) return darajaError(c, 404, '404.001.03', 'Invalid Access Token');
    const parsed = StkQuery.safeParse(await c.req.json().catch(() => null));
    if (!parsed.success || parsed.data.BusinessShortCode !== creds.shortcode || !validPassword(parsed.data.Password, parsed.data.Timestamp)) {
      return darajaError(c, 400, '400.002.02', 'Bad Request - Invalid request');
    }
    const prompt = prompts.find((p) => p.checkoutRequestId === parsed.data.CheckoutRequestID);
    if (prompt === undefined) return darajaError(c, 400, '400.002.02', 'Bad Request - Invalid CheckoutRequestID');
    note(`M-PESA: STK query for ${prompt.accountReference} answered (${prompt.state === 'waiting' ? 'still processing' : prompt.state.replace('_', ' ')})`);
    if (prompt.state === 'waiting' || prompt.resultCode === null) return darajaError(c, 500, '500.001.1001', 'The transaction is being processed');
    return c.json({
      ResponseCode: '0',
      ResponseDescription: 'The service request has been accepted successsfully',
      MerchantRequestID: prompt.merchantRequestId,
      CheckoutRequestID: prompt.checkoutRequestId,
      ResultCode: String(prompt.resultCode),
      ResultDesc: prompt.resultDesc,
    });
  });

  app.notFound((c) => c.json({ error: { message: 'Unknown path components', type: 'OAuthException', code: 2500 } }, 404));

  const server: ServerType = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  async function answerPrompt(checkoutRequestId: string, action: PromptAction): Promise<PromptState | undefined> {
    const prompt = prompts.find((p) => p.checkoutRequestId === checkoutRequestId);
    if (prompt === undefined) return undefined;
    if (prompt.state !== 'waiting') return prompt.state;
    const state: Exclude<PromptState, 'waiting'> =
      action.action === 'cancel' ? 'cancelled' : action.action === 'timeout' ? 'timed_out' : action.pin === options.demoPin ? 'paid' : 'wrong_pin';
    const result = resultTexts[state];
    if (prompt.timer !== undefined) {
      clearTimeout(prompt.timer);
      timers.delete(prompt.timer);
    }
    prompt.timer = undefined;
    prompt.state = state;
    prompt.resultCode = result.code;
    prompt.resultDesc = result.desc;
    if (state === 'paid') prompt.receipt = receiptNumber();
    note(`M-PESA: ${prompt.accountReference} ${state === 'paid' ? `paid, receipt ${prompt.receipt}` : `${state.replace('_', ' ')} (${result.code})`}`);
    if (switches.callbackLost) {
      prompt.callback = 'lost';
      note('M-PESA: the callback was lost; reconciliation will ask with an STK query');
      return state;
    }
    const stkCallback = {
      MerchantRequestID: prompt.merchantRequestId,
      CheckoutRequestID: prompt.checkoutRequestId,
      ResultCode: result.code,
      ResultDesc: result.desc,
      ...(state === 'paid'
        ? {
            CallbackMetadata: {
              Item: [
                { Name: 'Amount', Value: prompt.amount },
                { Name: 'MpesaReceiptNumber', Value: prompt.receipt },
                { Name: 'Balance' },
                { Name: 'TransactionDate', Value: Number(darajaTimestamp(new Date())) },
                { Name: 'PhoneNumber', Value: Number(prompt.phone) },
              ],
            },
          }
        : {}),
    };
    // Safaricom posts to the CallBackURL it was given; here, to the same path on the app.
    const url = new URL(prompt.callbackUrl);
    const status = await postToApp(`${url.pathname}${url.search}`, JSON.stringify({ Body: { stkCallback } }));
    prompt.callback = status !== undefined && status >= 200 && status < 300 ? 'posted' : 'failed';
    note(`M-PESA: callback posted, the app answered ${status ?? 'nothing'}`);
    return state;
  }

  async function send(who: Who, request: SendRequest): Promise<boolean> {
    const from = phones[who];
    const wamid = `wamid.SIMIN${randomBytes(12).toString('hex').toUpperCase()}`;
    const base = { from, id: wamid, timestamp: String(Math.floor(Date.now() / 1000)) };
    let message: Record<string, unknown>;
    let content: ChatContent;
    if ('text' in request) {
      message = { ...base, type: 'text', text: { body: request.text } };
      content = { type: 'text', body: request.text };
    } else if ('reply' in request) {
      message = { ...base, type: 'interactive', interactive: { type: 'button_reply', button_reply: request.reply } };
      content = { type: 'tap', title: request.reply.title };
    } else if ('listReply' in request) {
      message = { ...base, type: 'interactive', interactive: { type: 'list_reply', list_reply: request.listReply } };
      content = { type: 'tap', title: request.listReply.title };
    } else {
      message = { ...base, type: 'button', button: { payload: request.templateButton.payload, text: request.templateButton.title } };
      content = { type: 'tap', title: request.templateButton.title };
    }
    if (who === 'customer' && switches.outsideWindow) {
      switches = { ...switches, outsideWindow: false };
      note('The customer wrote: the 24-hour window is open again');
    }
    const id = nextId('m');
    addChat(who, { id, wamid: undefined, from: 'user', at: new Date().toISOString(), content, status: 'pending' });
    const status = await webhook(envelope({ contacts: [{ profile: { name: who === 'merchant' ? 'Merchant' : 'Customer' }, wa_id: from }], messages: [message] }));
    updateChat(id, { status: status === 200 ? 'sent' : 'failed' });
    if (status !== 200) note(`The app answered the webhook with ${status ?? 'nothing'}`);
    return status === 200;
  }

  const sms: SmsClient = {
    configured: true,
    async send(to, message) {
      const who = whoIs(to.replace(/^\+/, ''));
      const messageId = `ATXid_sim${randomBytes(8).toString('hex')}`;
      if (who !== undefined) inbox = { ...inbox, [who]: [...inbox[who], { id: messageId, at: new Date().toISOString(), from: 'InvoiceIQ', body: message }].slice(-CHAT_LIMIT) };
      note(`SMS sent to ${formatPhone(to.replace(/^\+/, '') as Msisdn)}`);
      return { messageId, statusCode: 101 };
    },
  };

  const publicChat = ({ wamid: _wamid, ...item }: StoredChat): ChatItem => item;
  const publicPrompt = ({ merchantRequestId: _m, callbackUrl: _c, resultCode: _r, resultDesc: _d, timer: _t, ...prompt }: StoredPrompt): Prompt => ({ ...prompt });

  return {
    baseUrl,
    setAppUrl(url) {
      appUrl = url.replace(/\/+$/, '');
    },
    sms,
    state: () => ({
      demoPin: options.demoPin,
      phones: {
        merchant: { phone: phones.merchant, display: formatPhone(phones.merchant as Msisdn) },
        customer: { phone: phones.customer, display: formatPhone(phones.customer as Msisdn) },
      },
      switches,
      chats: { merchant: chats.merchant.map(publicChat), customer: chats.customer.map(publicChat) },
      sms: inbox,
      prompts: prompts.map(publicPrompt),
      log: [...log].reverse(),
    }),
    send,
    answerPrompt,
    setSwitches(change) {
      switches = { ...switches, ...change };
      note(`Switches: ${Object.entries(switches).filter(([, on]) => on).map(([name]) => name).join(', ') || 'all off'}`);
      return switches;
    },
    reset() {
      generation += 1;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      chats = { merchant: [], customer: [] };
      inbox = { merchant: [], customer: [] };
      prompts = [];
      log = [];
      switches = { notOnWhatsApp: false, outsideWindow: false, callbackLost: false, whatsappDown: false };
      note('Simulator reset');
    },
    pause() {
      generation += 1;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
    },
    async close() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
