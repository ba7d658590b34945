/**
 * The seam between the inbound path and the conversation: one inbound message in, the
 * replies (outbox drafts) out, inside the inbound event's transaction with the sender's
 * conversation row locked.
 */
import type { Transaction } from 'kysely';
import type { Database } from '../db/schema.js';
import type { OutboundDraft } from '../domain/outbound.js';

/** An inbound message as the conversation sees it (provider details stripped). */
export type ConversationInput =
  | { kind: 'text'; text: string }
  | { kind: 'button'; id: string; title: string }
  | { kind: 'list'; id: string; title: string }
  | { kind: 'other'; type: string };

export type ConversationMessage = {
  phone: string;
  messageId: string;
  receivedAt: Date;
  profileName: string | undefined;
  input: ConversationInput;
};

export type ConversationHandler = (trx: Transaction<Database>, message: ConversationMessage) => Promise<OutboundDraft[]>;
