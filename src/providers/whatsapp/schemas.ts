/**
 * WhatsApp Cloud API payloads: the webhook we receive and the answers to what we send.
 * The single source of truth for their shapes. Unknown fields pass through (Meta adds
 * fields over time); every message type is accepted, the ones the bot reads are typed.
 */
import { z } from 'zod';

// At most 11 digits: a Date holds it (a longer one would fail every retry until dead).
const unixSeconds = z.string().regex(/^\d{1,11}$/, 'unix seconds as a string');

const base = {
  from: z.string().min(1),
  id: z.string().min(1),
  timestamp: unixSeconds,
  context: z.looseObject({ from: z.string().optional(), id: z.string().optional() }).optional(),
};

export const TextMessage = z.looseObject({ ...base, type: z.literal('text'), text: z.looseObject({ body: z.string() }) });

export const InteractiveMessage = z.looseObject({
  ...base,
  type: z.literal('interactive'),
  interactive: z.union([
    z.looseObject({ type: z.literal('button_reply'), button_reply: z.looseObject({ id: z.string(), title: z.string() }) }),
    z.looseObject({
      type: z.literal('list_reply'),
      list_reply: z.looseObject({ id: z.string(), title: z.string(), description: z.string().optional() }),
    }),
    // nfm_reply (flows) and future kinds: accepted, not read.
    z.looseObject({ type: z.string() }),
  ]),
});

/** A template quick-reply tap: `button.payload` carries what we set when sending. */
export const ButtonMessage = z.looseObject({
  ...base,
  type: z.literal('button'),
  button: z.looseObject({ payload: z.string().optional(), text: z.string().optional() }),
});

const otherTypes = [
  'image', 'audio', 'video', 'document', 'sticker', 'location', 'contacts', 'reaction',
  'order', 'system', 'unsupported', 'unknown', 'request_welcome', 'ephemeral',
] as const;

/** Any other type: accepted without error; the conversation answers "text and buttons only". */
export const OtherMessage = z.looseObject({
  ...base,
  type: z.string().refine((t) => t !== 'text' && t !== 'interactive' && t !== 'button', 'typed elsewhere'),
});

export const InboundMessage = z.union([TextMessage, InteractiveMessage, ButtonMessage, OtherMessage]);
export type InboundMessage = z.infer<typeof InboundMessage>;
export const knownOtherTypes: readonly string[] = otherTypes;

export const StatusError = z.looseObject({
  code: z.number().int(),
  title: z.string().optional(),
  message: z.string().optional(),
  error_data: z.looseObject({ details: z.string().optional() }).optional(),
});

export const MessageStatus = z.looseObject({
  id: z.string().min(1),
  status: z.enum(['sent', 'delivered', 'read', 'failed', 'deleted', 'warning']),
  timestamp: unixSeconds,
  recipient_id: z.string().optional(),
  conversation: z.looseObject({}).optional(),
  pricing: z.looseObject({}).optional(),
  errors: z.array(StatusError).optional(),
});
export type MessageStatus = z.infer<typeof MessageStatus>;

/** Who sent a message: the name the person gave WhatsApp. */
const Contact = z.looseObject({ wa_id: z.string().optional(), profile: z.looseObject({ name: z.string().optional() }).optional() });

export const ChangeValue = z.looseObject({
  messaging_product: z.literal('whatsapp').optional(),
  metadata: z.looseObject({ display_phone_number: z.string().optional(), phone_number_id: z.string().optional() }).optional(),
  contacts: z.array(Contact).optional(),
  messages: z.array(InboundMessage).optional(),
  statuses: z.array(MessageStatus).optional(),
  errors: z.array(StatusError).optional(),
});

export const WebhookPayload = z.looseObject({
  object: z.literal('whatsapp_business_account'),
  entry: z.array(
    z.looseObject({
      id: z.string(),
      changes: z.array(z.looseObject({ field: z.string(), value: ChangeValue })),
    }),
  ),
});
export type WebhookPayload = z.infer<typeof WebhookPayload>;

/**
 * A webhook's envelope, its items unread: one POST can carry several people's messages and
 * statuses, and one item Meta shapes in a way we do not know (a new status value, a message
 * without a field we expect) must not cost the others (splitWebhook).
 */
const LooseChangeValue = ChangeValue.extend({
  contacts: z.array(z.unknown()).optional(),
  messages: z.array(z.unknown()).optional(),
  statuses: z.array(z.unknown()).optional(),
  errors: z.array(z.unknown()).optional(),
});
export const WebhookEnvelope = z.looseObject({
  object: z.literal('whatsapp_business_account'),
  entry: z.array(z.looseObject({ id: z.string(), changes: z.array(z.looseObject({ field: z.string(), value: LooseChangeValue })) })),
});
export type WebhookEnvelope = z.infer<typeof WebhookEnvelope>;

type ItemList = 'contacts' | 'messages' | 'statuses' | 'errors';

/** An item of a webhook that does not match its schema: where it was, itself, and why. */
export type RejectedItem = { readonly at: string; readonly list: ItemList; readonly item: unknown; readonly issues: z.ZodError };

/**
 * Reads each item of an envelope on its own: the payload of the items that match, and the
 * ones that do not (to be kept as rejected). Pure.
 */
export function splitWebhook(envelope: WebhookEnvelope): { payload: WebhookPayload; rejected: RejectedItem[] } {
  const rejected: RejectedItem[] = [];
  const keep = <T>(schema: z.ZodType<T>, list: ItemList, items: readonly unknown[] | undefined, at: string): T[] | undefined =>
    items?.flatMap((item, k) => {
      const read = schema.safeParse(item);
      if (read.success) return [read.data];
      rejected.push({ at: `${at}.${list}.${k}`, list, item, issues: read.error });
      return [];
    });
  const entry = envelope.entry.map((e, i) => ({
    ...e,
    changes: e.changes.map((change, j) => {
      const at = `entry.${i}.changes.${j}.value`;
      const { contacts, messages, statuses, errors, ...rest } = change.value;
      const value: z.infer<typeof ChangeValue> = {
        ...rest,
        ...(contacts === undefined ? {} : { contacts: keep(Contact, 'contacts', contacts, at) }),
        ...(messages === undefined ? {} : { messages: keep(InboundMessage, 'messages', messages, at) }),
        ...(statuses === undefined ? {} : { statuses: keep(MessageStatus, 'statuses', statuses, at) }),
        ...(errors === undefined ? {} : { errors: keep(StatusError, 'errors', errors, at) }),
      };
      return { ...change, value };
    }),
  }));
  return { payload: { ...envelope, entry }, rejected };
}

/** What a successful send returns. */
export const SendResponse = z.looseObject({
  messages: z.array(z.looseObject({ id: z.string().min(1), message_status: z.string().optional() })).min(1),
});

/** Graph API error body. */
export const ErrorResponse = z.looseObject({
  error: z.looseObject({
    message: z.string().optional(),
    type: z.string().optional(),
    code: z.number().int().optional(),
    error_subcode: z.number().int().optional(),
    error_data: z.looseObject({ details: z.string().optional() }).optional(),
    fbtrace_id: z.string().optional(),
  }),
});
