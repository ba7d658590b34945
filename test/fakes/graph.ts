/**
 * A fake WhatsApp Cloud API (Graph) server on 127.0.0.1: records every request and answers
 * with a scripted response (default: success with a fresh wamid). Real HTTP, real sockets.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type RecordedRequest = {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: Record<string, unknown>;
  receivedAt: number;
};

export type FakeResponse =
  | { kind: 'ok'; wamid?: string }
  | { kind: 'error'; status: number; code: number; message?: string; retryAfter?: number }
  | { kind: 'hang' }
  | { kind: 'raw'; status: number; body: string };

export type FakeGraph = {
  readonly baseUrl: string;
  readonly requests: RecordedRequest[];
  /** Responses used in order for the next sends; when empty, `fallback` answers. */
  queue(...responses: FakeResponse[]): void;
  setFallback(response: FakeResponse): void;
  /** Drops scripted responses and restores the default success. */
  reset(): void;
  /** Messages (not templates) sent to `to`. */
  sentTo(to: string): RecordedRequest[];
  waitForRequests(count: number, timeoutMs?: number): Promise<RecordedRequest[]>;
  /** Holds every answer until the returned function is called, then sends them all at once. */
  holdAnswers(): () => void;
  /** Holds the answers to sends to `to` only, as holdAnswers. */
  holdAnswersTo(to: string): () => void;
  close(): Promise<void>;
};

export async function startFakeGraph(): Promise<FakeGraph> {
  const requests: RecordedRequest[] = [];
  const scripted: FakeResponse[] = [];
  let fallback: FakeResponse = { kind: 'ok' };
  let counter = 0;
  const hanging = new Set<() => void>();
  let held: Array<() => void> | null = null;
  const heldTo = new Map<string, Array<() => void>>();

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: Record<string, unknown> = {};
      try {
        body = text.length > 0 ? (JSON.parse(text) as Record<string, unknown>) : {};
      } catch {
        body = { unparseable: text };
      }
      requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body, receivedAt: Date.now() });
      if (held !== null) {
        held.push(() => answer(res, body));
        return;
      }
      const heldForThem = typeof body.to === 'string' ? heldTo.get(body.to) : undefined;
      if (heldForThem !== undefined) {
        heldForThem.push(() => answer(res, body));
        return;
      }
      answer(res, body);
    });
  });

  function answer(res: ServerResponse, body: Record<string, unknown>): void {
    const response = scripted.shift() ?? fallback;
    switch (response.kind) {
      case 'ok': {
        counter += 1;
        const wamid = response.wamid ?? `wamid.FAKE${String(counter).padStart(6, '0')}`;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ messaging_product: 'whatsapp', contacts: [{ input: body.to, wa_id: body.to }], messages: [{ id: wamid }] }));
        return;
      }
      case 'error': {
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (response.retryAfter !== undefined) headers['retry-after'] = String(response.retryAfter);
        res.writeHead(response.status, headers);
        res.end(JSON.stringify({ error: { message: response.message ?? `error ${response.code}`, type: 'OAuthException', code: response.code, fbtrace_id: 'trace' } }));
        return;
      }
      case 'raw':
        res.writeHead(response.status, { 'content-type': 'text/plain' });
        res.end(response.body);
        return;
      case 'hang': {
        const end = () => res.destroy();
        hanging.add(end);
        res.on('close', () => hanging.delete(end));
        return;
      }
    }
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    baseUrl: `http://127.0.0.1:${port}`,
    requests,
    queue: (...responses) => scripted.push(...responses),
    setFallback(response) {
      fallback = response;
    },
    reset() {
      scripted.length = 0;
      fallback = { kind: 'ok' };
    },
    sentTo: (to) => requests.filter((r) => r.body.to === to),
    holdAnswers() {
      held ??= [];
      return () => {
        const waiting = held ?? [];
        held = null;
        for (const send of waiting) send();
      };
    },
    holdAnswersTo(to) {
      if (!heldTo.has(to)) heldTo.set(to, []);
      return () => {
        const waiting = heldTo.get(to) ?? [];
        heldTo.delete(to);
        for (const send of waiting) send();
      };
    },
    async waitForRequests(count, timeoutMs = 10_000) {
      const deadline = performance.now() + timeoutMs;
      while (requests.length < count) {
        if (performance.now() > deadline) throw new Error(`expected ${count} Graph requests, got ${requests.length}`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      return requests;
    },
    async close() {
      for (const end of hanging) end();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
