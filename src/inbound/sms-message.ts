/**
 * Text messages people send to the service's SMS number (Africa's Talking "incoming
 * messages" callback). The invoice, the reminders and the payment notices that go by SMS say
 * "reply PAY"; a reply runs the same conversation turn as a WhatsApp text from that number
 * (but cannot change a merchant's business: the machine's `bySms`),
 * and the answer goes back by the usual delivery rules (by SMS, unless the person has an open
 * WhatsApp window). Unsigned by the provider: the route is reachable only under a secret in
 * its URL (SMS_INBOUND_TOKEN). Each message id is applied once.
 */
import { z } from 'zod';
import type { ConversationMessage } from '../conversation/port.js';
import { parsePhone } from '../domain/parse.js';

/** The longest text kept: a concatenated SMS of 10 parts is 1,530 characters. */
export const MAX_SMS_TEXT = 2_000;

export const IncomingSms = z.looseObject({
  id: z.string().trim().min(1).max(200),
  // Text in a form body; a JSON body may carry the numbers as numbers: either reads.
  from: z.union([z.string(), z.number().transform(String)]).pipe(z.string().trim().min(1).max(40)),
  // Empty texts happen (a blank reply); the conversation answers those too.
  text: z.string().max(MAX_SMS_TEXT),
  to: z.union([z.string().max(40), z.number().transform(String)]).optional(),
  date: z.string().max(60).optional(),
  linkId: z.string().max(200).optional(),
  networkCode: z.union([z.string().max(20), z.number().transform(String)]).optional(),
});
export type IncomingSms = z.infer<typeof IncomingSms>;

/** When the message was sent, as the provider says (`2026-12-02 10:15:30`, UTC), or now. */
export function sentAt(sms: IncomingSms, now: Date): Date {
  if (sms.date === undefined) return now;
  const at = new Date(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?$/.test(sms.date) ? `${sms.date.replace(' ', 'T')}Z` : sms.date);
  return Number.isNaN(at.getTime()) || at > now ? now : at;
}

/**
 * An incoming SMS as the conversation takes it: a text from that number, run like a WhatsApp
 * text (src/inbound/whatsapp.ts applies it, locking the sender's conversation row without
 * moving the WhatsApp 24-hour window, which an SMS does not open), except that it cannot
 * change a merchant's business (channel sms: the conversation machine's `bySms`). Null for a
 * sender number that is not a Kenyan mobile.
 */
export function smsConversationMessage(sms: IncomingSms, now: Date): ConversationMessage | null {
  const phone = parsePhone(sms.from);
  if (!phone.ok) return null;
  return { phone: phone.value, messageId: sms.id, receivedAt: sentAt(sms, now), profileName: undefined, input: { kind: 'text', text: sms.text }, channel: 'sms' };
}
