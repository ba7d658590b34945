/**
 * The WhatsApp client on a thread of its own (a worker thread running createWhatsAppClient):
 * the same `send` and `sendTemplate`, the same answers and the same errors (ProviderError,
 * TransportError, rebuilt from what the thread reports), with the HTTP work off the event loop
 * that takes webhooks and callbacks.
 *
 * Why: under load the event loop is the bottleneck, not the machine. bench/callbacks.ts at 256
 * clients kept it 92-95% busy (eventLoopUtilization) while Postgres, the load and the app took
 * about 1.6 of the two cores; each callback's two receipts cost it about 40-47 us a send
 * through the client (building the body, the request, reading and checking the answer), and
 * about 5 us a send handed to a thread (exp micro-benchmark, README "Known limits").
 *
 * Calls made in the same turn of the event loop cross to the thread as one message, and the
 * thread's answers come back the same way. The thread starts on the first send (or `warm()`),
 * keeps the process alive only while a send is in flight, and if it dies, every send in
 * flight fails as a network error (retryable: the message may or may not have gone, as with
 * any connection cut mid-request) and the next send starts a new thread. A send the thread
 * never answers fails as a timeout 10 s after its own timeout would have.
 */
import { Worker } from 'node:worker_threads';
import { z } from 'zod';
import type { MessageContent } from '../../domain/outbound.js';
import { ProviderError, TransportError } from '../errors.js';
import type { TemplateMessage, WhatsAppClient, WhatsAppClientSettings } from './client.js';

/** What a thread's send asks for. */
type Send = { to: string } & ({ kind: 'send'; content: MessageContent } | { kind: 'template'; template: TemplateMessage });
export type ThreadRequest = { id: number } & Send;

/** A failure as the thread reports it: enough to rebuild the error the client threw. */
export const ThreadFailure = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('provider'),
    provider: z.string(),
    message: z.string(),
    httpStatus: z.number().int().optional(),
    code: z.string().optional(),
    retryable: z.boolean(),
    retryAfterSeconds: z.number().optional(),
  }),
  z.object({ type: z.literal('transport'), provider: z.string(), message: z.string(), reason: z.enum(['timeout', 'network', 'not_configured']) }),
  z.object({ type: z.literal('other'), message: z.string() }),
]);
export type ThreadFailure = z.infer<typeof ThreadFailure>;

/** The thread's answers, one per request. */
export const ThreadAnswers = z.array(
  z.union([z.object({ id: z.number().int(), wamid: z.string().nullable() }), z.object({ id: z.number().int(), failure: ThreadFailure })]),
);

/** How long past the client's own timeout a send the thread has not answered is given up. */
const THREAD_GRACE_MS = 10_000;

export type WhatsAppSendThread = WhatsAppClient & {
  /** Starts the thread now (it starts on the first send otherwise). */
  warm(): void;
  /** Ends the thread; sends still in flight fail as network errors. */
  close(): Promise<void>;
};

/** Rebuilds the error the client threw on the thread. */
export function failureToError(failure: ThreadFailure): Error {
  switch (failure.type) {
    case 'provider':
      return new ProviderError({
        provider: failure.provider,
        message: failure.message,
        retryable: failure.retryable,
        ...(failure.httpStatus === undefined ? {} : { httpStatus: failure.httpStatus }),
        ...(failure.code === undefined ? {} : { code: failure.code }),
        ...(failure.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: failure.retryAfterSeconds }),
      });
    case 'transport':
      return new TransportError({ provider: failure.provider, message: failure.message, reason: failure.reason });
    case 'other':
      return new Error(failure.message);
  }
}

/** The worker: the compiled file beside this one, or under tsx (development, tests) the TypeScript one through tsx's loader. */
function startWorker(settings: WhatsAppClientSettings): Worker {
  const here = import.meta.url;
  if (!here.endsWith('.ts')) return new Worker(new URL('./thread-worker.js', here), { workerData: settings });
  const entry = new URL('./thread-worker.ts', here).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  return new Worker(`import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(entry)}); })`, { eval: true, workerData: settings });
}

export function createWhatsAppSendThread(settings: WhatsAppClientSettings): WhatsAppSendThread {
  const configured = settings.token !== undefined && settings.phoneId !== undefined;
  type Pending = { resolve: (value: { wamid: string | null }) => void; reject: (error: Error) => void; giveUpAt: number };
  const pending = new Map<number, Pending>();
  let nextId = 1;
  let worker: Worker | undefined;
  let outgoing: ThreadRequest[] = [];
  let flushQueued = false;
  let watchdog: NodeJS.Timeout | undefined;

  function failAll(worker: Worker, message: string): void {
    for (const [id, call] of pending) {
      pending.delete(id);
      call.reject(new TransportError({ provider: 'whatsapp', reason: 'network', message }));
    }
    settle(worker);
  }

  /** In flight: the thread and the watchdog keep the process alive; idle: neither does. */
  function settle(on: Worker | undefined): void {
    if (pending.size > 0) {
      on?.ref();
      watchdog ??= setInterval(giveUpLate, 1_000);
      return;
    }
    on?.unref();
    if (watchdog !== undefined) clearInterval(watchdog);
    watchdog = undefined;
  }

  function giveUpLate(): void {
    const now = performance.now();
    for (const [id, call] of pending) {
      if (call.giveUpAt > now) continue;
      pending.delete(id);
      call.reject(new TransportError({ provider: 'whatsapp', reason: 'timeout', message: 'the send thread did not answer in time' }));
    }
    settle(worker);
  }

  function thread(): Worker {
    if (worker !== undefined) return worker;
    const started = startWorker(settings);
    worker = started;
    started.unref();
    started.on('message', (message: unknown) => {
      const answers = ThreadAnswers.safeParse(message);
      if (!answers.success) {
        failAll(started, 'the send thread answered something unreadable');
        return;
      }
      for (const answer of answers.data) {
        const call = pending.get(answer.id);
        if (call === undefined) continue;
        pending.delete(answer.id);
        if ('failure' in answer) call.reject(failureToError(answer.failure));
        else call.resolve({ wamid: answer.wamid });
      }
      settle(started);
    });
    const gone = (why: string) => {
      if (worker === started) worker = undefined;
      failAll(started, `the send thread stopped (${why}); the message may or may not have gone`);
    };
    started.on('error', (error) => gone(error.message));
    started.on('exit', (code) => gone(`exit code ${code}`));
    return started;
  }

  function call(request: Send): Promise<{ wamid: string | null }> {
    if (!configured) {
      return Promise.reject(new TransportError({ provider: 'whatsapp', reason: 'not_configured', message: 'WABA_TOKEN / WABA_PHONE_ID are not set' }));
    }
    const id = nextId++;
    const answer = new Promise<{ wamid: string | null }>((resolve, reject) => {
      pending.set(id, { resolve, reject, giveUpAt: performance.now() + settings.timeoutMs + THREAD_GRACE_MS });
    });
    outgoing.push({ ...request, id });
    if (!flushQueued) {
      flushQueued = true;
      queueMicrotask(() => {
        flushQueued = false;
        const batch = outgoing;
        outgoing = [];
        const target = thread();
        settle(target);
        target.postMessage(batch);
      });
    }
    return answer;
  }

  return {
    configured,
    send: (to, content) => call({ kind: 'send', to, content }),
    sendTemplate: (to, template) => call({ kind: 'template', to, template }),
    warm() {
      if (configured) thread();
    },
    async close() {
      const running = worker;
      worker = undefined;
      if (running !== undefined) {
        await running.terminate();
        failAll(running, 'the send thread was closed');
      }
    },
  };
}
