/**
 * The simulator's browser API, as zod schemas: what `GET /simulator/api/state` answers and
 * what the page may post. The page (src/http/simulator/assets/simulator.js) and the routes
 * (src/http/simulator.ts) both follow this file.
 *
 * Routes (all JSON; errors answer `{ code, message, requestId }` with a 4xx):
 * - `GET  /simulator/api/state`                     -> SimulatorState
 * - `POST /simulator/api/phones/:who/send`          (who = merchant | customer) body SendRequest
 *                                                    -> { ok: true } (the app acknowledged the signed webhook)
 * - `POST /simulator/api/prompts/:checkoutRequestId` body PromptAction -> { state }
 * - `PUT  /simulator/api/switches`                  body Partial<Switches> -> Switches
 * - `POST /simulator/api/reconcile`                 -> { queried, applied, expired } (asks M-PESA now, as the
 *                                                    every-minute job does for attempts pending 3 minutes)
 * - `POST /simulator/api/reset`                     -> { ok: true } (clears the simulator's chats, prompts,
 *                                                    SMS and the two numbers' data in the database)
 */
import { z } from 'zod';

export const Who = z.enum(['merchant', 'customer']);
export type Who = z.infer<typeof Who>;

export const Switches = z.object({
  /** The customer's number is not on WhatsApp: Meta answers 131026, the bot falls back to SMS. */
  notOnWhatsApp: z.boolean(),
  /**
   * The customer last wrote 25 hours ago: the bot sends must-reach messages as templates, and
   * Meta fails free-form ones with 131047 (then SMS). The customer's next message clears it.
   */
  outsideWindow: z.boolean(),
  /** Safaricom never posts the STK callback: reconciliation (STK query) heals it. */
  callbackLost: z.boolean(),
  /** WhatsApp answers 503 to every send: retries with backoff, then SMS. */
  whatsappDown: z.boolean(),
});
export type Switches = z.infer<typeof Switches>;

const Button = z.object({ id: z.string(), title: z.string() });

export const ChatContent = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text'), body: z.string() }),
  z.object({ type: z.literal('buttons'), body: z.string(), footer: z.string().optional(), buttons: z.array(Button) }),
  z.object({
    type: z.literal('list'),
    body: z.string(),
    button: z.string(),
    sections: z.array(z.object({ title: z.string().optional(), rows: z.array(z.object({ id: z.string(), title: z.string(), description: z.string().optional() })) })),
  }),
  /** An approved template as the phone shows it; a quick-reply button sends its payload. */
  z.object({ type: z.literal('template'), name: z.string(), body: z.string(), buttons: z.array(z.object({ payload: z.string(), title: z.string() })) }),
  /** What the user tapped (a reply button, a list row or a template's quick reply). */
  z.object({ type: z.literal('tap'), title: z.string() }),
]);
export type ChatContent = z.infer<typeof ChatContent>;

export const ChatItem = z.object({
  id: z.string(),
  from: z.enum(['user', 'bot']),
  at: z.string(),
  content: ChatContent,
  /**
   * Bot messages: the delivery ticks, as the status webhooks the app acknowledged
   * ('sent' one tick, 'delivered' two, 'read' two blue). User messages: 'sent' once the app
   * acknowledged the webhook, 'failed' if it did not.
   */
  status: z.enum(['pending', 'sent', 'delivered', 'read', 'failed']),
});
export type ChatItem = z.infer<typeof ChatItem>;

export const SmsItem = z.object({ id: z.string(), at: z.string(), from: z.string(), body: z.string() });
export type SmsItem = z.infer<typeof SmsItem>;

export const PromptState = z.enum(['waiting', 'paid', 'wrong_pin', 'cancelled', 'timed_out']);
export type PromptState = z.infer<typeof PromptState>;

export const Prompt = z.object({
  checkoutRequestId: z.string(),
  who: Who,
  phone: z.string(),
  amount: z.number(),
  /** The invoice number (AccountReference). */
  accountReference: z.string(),
  description: z.string(),
  state: PromptState,
  createdAt: z.string(),
  /** When a waiting prompt times out by itself (1037). */
  expiresAt: z.string(),
  receipt: z.string().optional(),
  /** What became of Safaricom's callback. */
  callback: z.enum(['none', 'posted', 'lost', 'failed']),
});
export type Prompt = z.infer<typeof Prompt>;

/** A line of the sandbox's log of what the providers did ("callback lost", "131026 -> SMS"). */
export const LogItem = z.object({ id: z.string(), at: z.string(), text: z.string() });
export type LogItem = z.infer<typeof LogItem>;

export const Phone = z.object({ phone: z.string(), display: z.string() });

export const SimulatorState = z.object({
  demoPin: z.string(),
  phones: z.object({ merchant: Phone, customer: Phone }),
  switches: Switches,
  chats: z.object({ merchant: z.array(ChatItem), customer: z.array(ChatItem) }),
  sms: z.object({ merchant: z.array(SmsItem), customer: z.array(SmsItem) }),
  /** STK prompts, newest last. */
  prompts: z.array(Prompt),
  log: z.array(LogItem),
});
export type SimulatorState = z.infer<typeof SimulatorState>;

export const SendRequest = z.union([
  z.object({ text: z.string().min(1).max(4096) }).strict(),
  /** An interactive reply button (type interactive / button_reply). */
  z.object({ reply: Button }).strict(),
  /** A list row (type interactive / list_reply). */
  z.object({ listReply: Button }).strict(),
  /** A template's quick-reply button (type button). */
  z.object({ templateButton: z.object({ payload: z.string(), title: z.string() }) }).strict(),
]);
export type SendRequest = z.infer<typeof SendRequest>;

export const PromptAction = z.discriminatedUnion('action', [
  z.object({ action: z.literal('pin'), pin: z.string().regex(/^\d{4,6}$/, 'a PIN is 4 to 6 digits') }),
  z.object({ action: z.literal('cancel') }),
  z.object({ action: z.literal('timeout') }),
]);
export type PromptAction = z.infer<typeof PromptAction>;
