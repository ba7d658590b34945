/**
 * A minimal conversation for channel tests: answers every message with one menu reply, so
 * webhook tests see exactly one outbound message per inbound one.
 */
import type { ConversationHandler, ConversationMessage } from '../../src/conversation/port.js';
import type { OutboundDraft } from '../../src/domain/outbound.js';

export function menuReply(message: ConversationMessage): OutboundDraft {
  const greeting = message.input.kind === 'other' ? 'I can only read text and buttons for now.' : 'Welcome to InvoiceIQ.';
  return {
    recipient: message.phone,
    kind: 'reply',
    payload: {
      message: {
        type: 'buttons',
        body: `${greeting} Create M-PESA invoices right here in WhatsApp.`,
        buttons: [
          { id: 'new_invoice', title: 'New invoice' },
          { id: 'list', title: 'My invoices' },
          { id: 'help', title: 'Help' },
        ],
      },
    },
  };
}

export const menuHandler: ConversationHandler = async (_trx, message) => [menuReply(message)];
