/**
 * The send thread of thread.ts: the WhatsApp client (createWhatsAppClient, its own connection
 * pool) runs here. Each message from the main thread is a batch of sends; their answers (the
 * wamid, or the error the client threw, as plain fields) go back batched too.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { z } from 'zod';
import { MessageContent } from '../../domain/outbound.js';
import { ProviderError, TransportError } from '../errors.js';
import { createWhatsAppClient } from './client.js';
import type { ThreadFailure } from './thread.js';

const Settings = z.object({
  baseUrl: z.string(),
  apiVersion: z.string(),
  phoneId: z.string().optional(),
  token: z.string().optional(),
  timeoutMs: z.number().int().positive(),
});
const Template = z.object({ name: z.string(), language: z.string(), parameters: z.array(z.string()), buttonPayload: z.string().optional() });
const Request = z.discriminatedUnion('kind', [
  z.object({ id: z.number().int(), to: z.string(), kind: z.literal('send'), content: MessageContent }),
  z.object({ id: z.number().int(), to: z.string(), kind: z.literal('template'), template: Template }),
]);
const Id = z.object({ id: z.number().int() });

const port = parentPort;
if (port === null) throw new Error('thread-worker.ts runs only as a worker thread');
const settings = Settings.parse(workerData);
const client = createWhatsAppClient({ ...settings, phoneId: settings.phoneId, token: settings.token });

function failureOf(error: unknown): ThreadFailure {
  if (error instanceof ProviderError) {
    return {
      type: 'provider',
      provider: error.provider,
      message: error.message,
      retryable: error.retryable,
      ...(error.httpStatus === undefined ? {} : { httpStatus: error.httpStatus }),
      ...(error.code === undefined ? {} : { code: error.code }),
      ...(error.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: error.retryAfterSeconds }),
    };
  }
  if (error instanceof TransportError) return { type: 'transport', provider: error.provider, message: error.message, reason: error.reason };
  return { type: 'other', message: error instanceof Error ? error.message : String(error) };
}

type Answer = { id: number; wamid: string | null } | { id: number; failure: ThreadFailure };
let answers: Answer[] = [];
let flushQueued = false;

function answer(one: Answer): void {
  answers.push(one);
  if (flushQueued) return;
  flushQueued = true;
  // Answers of the same turn (a burst of responses read together) go back as one message.
  setImmediate(() => {
    flushQueued = false;
    const batch = answers;
    answers = [];
    port!.postMessage(batch);
  });
}

port.on('message', (message: unknown) => {
  for (const item of Array.isArray(message) ? (message as unknown[]) : []) {
    const parsed = Request.safeParse(item);
    if (!parsed.success) {
      // Not a send this client can make: said so, to the caller that asked (if it can be told).
      const id = Id.safeParse(item);
      if (id.success) answer({ id: id.data.id, failure: { type: 'other', message: `the send thread refused a request: ${parsed.error.message.slice(0, 200)}` } });
      continue;
    }
    const request = parsed.data;
    const sent = request.kind === 'send' ? client.send(request.to, request.content) : client.sendTemplate(request.to, request.template);
    sent.then(
      ({ wamid }) => answer({ id: request.id, wamid }),
      (error: unknown) => answer({ id: request.id, failure: failureOf(error) }),
    );
  }
});
