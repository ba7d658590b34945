/**
 * The seam between the inbound path and the conversation: one inbound message in, the
 * replies (outbox drafts) out, inside the inbound event's transaction with the sender's
 * conversation row locked. A handler may also take many senders' messages in one
 * transaction (`prepare`): what the turns read comes in one round trip, what they save
 * goes out in one, which is what lets the inbound path commit a burst of webhooks together.
 */
import type { RawBuilder, Transaction } from 'kysely';
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
  /** How it came (default whatsapp): by SMS a turn may not change a merchant's business (MachineContext.channel). */
  channel?: 'whatsapp' | 'sms';
};

/** Turns for several senders (one message each) sharing one transaction. */
export type ConversationBatch = {
  /** One sender's turn; nothing is saved until `save`. */
  run(message: ConversationMessage): Promise<OutboundDraft[]>;
  /** Writes every state the turns changed, in one statement. */
  save(): Promise<void>;
  /**
   * The statement save() would run (undefined: nothing to save), for a caller that runs it as
   * part of one of its own (a data-modifying CTE) instead of calling save().
   */
  saveStatement(): RawBuilder<unknown> | undefined;
};

/** What a batch's turns read, one row per sender, as `factsOf` selects it (opaque to callers). */
export type SenderFacts = { phone: string } & Record<string, unknown>;

export type ConversationHandler = ((trx: Transaction<Database>, message: ConversationMessage) => Promise<OutboundDraft[]>) & {
  /**
   * Loads what the turns of these senders need (their rows already locked), in one round trip;
   * or none, when the caller brings the rows `factsOf` selected in a statement of its own.
   */
  prepare?: (trx: Transaction<Database>, phones: readonly string[], facts?: readonly SenderFacts[]) => Promise<ConversationBatch>;
  /**
   * The select that gives each sender's facts, from `senders`: a relation of (phone, state,
   * language), such as the RETURNING of the statement that locks their conversation rows. A
   * caller ends that statement with it and saves a round trip.
   */
  factsOf?: (senders: RawBuilder<unknown>) => RawBuilder<SenderFacts>;
};
