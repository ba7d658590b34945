/**
 * What the bot sends, as data: the outbox row's `content`. Validated against WhatsApp's
 * limits when it is created (pure), so a reply that Meta would refuse is caught in the
 * transaction that makes it, not by a failed delivery later.
 */
import { z } from 'zod';

const uniqueBy = <T>(items: readonly T[], key: (item: T) => string) => new Set(items.map(key)).size === items.length;

export const TextContent = z.object({ type: z.literal('text'), body: z.string().trim().min(1).max(4096) });

export const ButtonsContent = z.object({
  type: z.literal('buttons'),
  body: z.string().trim().min(1).max(1024),
  footer: z.string().trim().min(1).max(60).optional(),
  buttons: z
    .array(z.object({ id: z.string().min(1).max(256), title: z.string().trim().min(1).max(20) }))
    .min(1)
    .max(3)
    .refine((buttons) => uniqueBy(buttons, (b) => b.title), 'button titles must be unique')
    .refine((buttons) => uniqueBy(buttons, (b) => b.id), 'button ids must be unique'),
});

export const ListContent = z.object({
  type: z.literal('list'),
  body: z.string().trim().min(1).max(1024),
  button: z.string().trim().min(1).max(20),
  sections: z
    .array(
      z.object({
        title: z.string().trim().min(1).max(24).optional(),
        rows: z.array(z.object({ id: z.string().min(1).max(200), title: z.string().trim().min(1).max(24), description: z.string().max(72).optional() })).min(1),
      }),
    )
    .min(1)
    .max(10)
    .refine((sections) => sections.reduce((n, s) => n + s.rows.length, 0) <= 10, 'a list holds at most 10 rows')
    .refine((sections) => uniqueBy(sections.flatMap((s) => s.rows), (r) => r.id), 'row ids must be unique'),
});

export const MessageContent = z.discriminatedUnion('type', [TextContent, ButtonsContent, ListContent]);
export type MessageContent = z.infer<typeof MessageContent>;

/** Kinds that must reach the person even outside the 24-hour window (template or SMS). */
export const mustReachKinds = ['invoice', 'receipt', 'reminder', 'notice'] as const;
export const OutboundKind = z.enum(['reply', ...mustReachKinds]);
export type OutboundKind = z.infer<typeof OutboundKind>;
export type TemplateKind = Exclude<OutboundKind, 'reply' | 'notice'>;

export const OutboundPayload = z.object({
  message: MessageContent,
  /** Plain text for SMS; derived from `message` when absent. */
  sms: z.string().trim().min(1).max(918).optional(),
  /** Body parameters (and quick-reply payload) for the kind's approved template. */
  template: z
    .object({
      parameters: z.array(z.string().min(1).max(1024)).max(10),
      buttonPayload: z.string().min(1).max(256).optional(),
    })
    .optional(),
});
export type OutboundPayload = z.infer<typeof OutboundPayload>;

export type OutboundDraft = { recipient: string; kind: OutboundKind; payload: OutboundPayload; invoiceId?: string };

export const SMS_MAX_CHARS = 918;

/** Cuts to at most `max` UTF-16 units without splitting a surrogate pair (half an emoji). */
export function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  const cut = text.slice(0, Math.max(0, max));
  return /[\uD800-\uDBFF]$/.test(cut) ? cut.slice(0, -1) : cut;
}

/**
 * SMS has no buttons: say how to answer instead. The reply hint is kept whole and the body
 * cut to make room, since the hint is the only way an SMS reader learns how to answer.
 */
export function smsText(payload: OutboundPayload): string {
  if (payload.sms !== undefined) return payload.sms;
  const { message } = payload;
  const withHint = (body: string, hint: string) => `${truncate(body, SMS_MAX_CHARS - hint.length)}${hint}`;
  switch (message.type) {
    case 'text':
      return truncate(message.body, SMS_MAX_CHARS);
    case 'buttons':
      return withHint(message.body, `\nReply: ${message.buttons.map((b) => b.title.toUpperCase()).join(' / ')}`);
    case 'list':
      return withHint(message.body, `\nReply with one of: ${message.sections.flatMap((s) => s.rows.map(smsReply)).join(', ')}`);
  }
}

/**
 * What an SMS reader types to choose a list row. A row that pays an invoice (`pay:INV-0007`,
 * or `pay:INV-0007~1a2b3c4d` when two merchants share the number) is chosen by the command
 * `PAY INV-0007` (the conversation reads the tag in it too), with the rest of its title
 * ("KES 700") to tell the rows apart; a row title typed back would not be understood.
 */
function smsReply(row: { id: string; title: string }): string {
  const pay = /^pay:((INV-\d+)(~[0-9a-f]{8})?)$/i.exec(row.id);
  if (pay === null) return row.title;
  const rest = row.title.startsWith(`${pay[2]!} - `) ? row.title.slice(pay[2]!.length + 3) : row.title;
  return `PAY ${pay[1]!} (${rest})`;
}
