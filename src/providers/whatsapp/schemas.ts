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

export const ChangeValue = z.looseObject({
  messaging_product: z.literal('whatsapp').optional(),
  metadata: z.looseObject({ display_phone_number: z.string().optional(), phone_number_id: z.string().optional() }).optional(),
  contacts: z.array(z.looseObject({ wa_id: z.string().optional(), profile: z.looseObject({ name: z.string().optional() }).optional() })).optional(),
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
