/**
 * Shared set-up for WhatsApp/SMS channel tests: a test database, the real app configured
 * against a fake Graph server on 127.0.0.1, and Africa's Talking intercepted with nock
 * (the SDK hard-codes its host).
 */
import { after, before, beforeEach } from 'node:test';
import { sql } from 'kysely';
import nock from 'nock';
import type { ConversationHandler } from '../../src/conversation/port.js';
import { createOutbox, type Outbox, type OutboxDeps } from '../../src/delivery/outbox.js';
import type { OutboundDraft } from '../../src/domain/outbound.js';
import type { JobDefinition } from '../../src/jobs/queue.js';
import { startFakeGraph, type FakeGraph } from '../fakes/graph.js';
import { APP_SECRET, PHONE_ID, signed } from '../fixtures/whatsapp.js';
import { buildTestApp, type TestApp } from './app.js';
import { createTestDatabase, type TestDatabase } from './database.js';

export const AT_HOST = 'https://api.africastalking.com';
export const VERIFY_TOKEN = 'verify-me-please';

export type SmsRecord = { to: string; message: string; from: string | undefined; username: string | undefined };

export type ChannelFixture = TestApp & {
  database: TestDatabase;
  graph: FakeGraph;
  /** SMS requests that reached the intercepted Africa's Talking API. */
  sms: SmsRecord[];
  /** Next SMS answers (statusCode per recipient, or an HTTP status); default 101 Success. */
  smsAnswers: Array<{ statusCode: number } | { httpStatus: number }>;
  post(payload: unknown, headers?: Record<string, string>): Promise<Response>;
  count(table: 'inbound_events' | 'outbound_messages' | 'conversations'): Promise<number>;
  /** `phone` wrote in the last 24 hours (free-form messages are allowed); nothing if it has a conversation already. */
  chatting(phone: string): Promise<void>;
  /** The text bodies sent to `to` on WhatsApp, in the order they arrived. */
  sentTexts(to: string): string[];
  /** Another worker holds a live claim on message `id` (sending, stamped now), as if sending it. */
  claimedElsewhere(id: string): Promise<void>;
  /** An outbox of its own (as another process's, or with other options) over the same database and providers. */
  anotherOutbox(options?: Pick<OutboxDeps, 'claimRenewAfterMs' | 'recordSentPatienceMs' | 'paceMaxWaitMs'>): Outbox;
  close(): Promise<void>;
};

/** `n` chat replies to `to`, with the bodies `part <from>`, `part <from + 1>`, ... */
export const textDrafts = (to: string, n: number, from = 0): OutboundDraft[] =>
  Array.from({ length: n }, (_, i) => ({ recipient: to, kind: 'reply', payload: { message: { type: 'text', body: `part ${from + i}` } } }));

let smsCounter = 0;

/**
 * A channel fixture for a whole test file: started before its tests and handed to `use` (with
 * anything else the file builds from it), closed after them, and between tests idle (no
 * delivery left running) with the fake Graph API's script reset.
 */
export function channelSuite(options: Parameters<typeof startChannelFixture>[0], use: (f: ChannelFixture) => void): void {
  let f: ChannelFixture | undefined;
  before(async () => {
    f = await startChannelFixture(options);
    use(f);
  });
  after(() => f?.close());
  beforeEach(async () => {
    await f!.deps.outbox.idle();
    f!.graph.reset();
  });
}

export async function startChannelFixture(
  options: {
    env?: Record<string, string>;
    conversation?: ConversationHandler;
    jobs?: JobDefinition[];
    now?: () => Date;
    /** Queues created but given no worker here: the test runs their jobs by hand, with no worker racing it. */
    idleQueues?: string[];
  } = {},
): Promise<ChannelFixture> {
  const database = await createTestDatabase();
  const graph = await startFakeGraph();
  const sms: SmsRecord[] = [];
  const smsAnswers: ChannelFixture['smsAnswers'] = [];

  nock.disableNetConnect();
  nock.enableNetConnect((host) => host.startsWith('127.0.0.1'));
  nock(AT_HOST)
    .persist()
    .post('/version1/messaging')
    .reply(function (_uri, body) {
      const form = new URLSearchParams(typeof body === 'string' ? body : '');
      sms.push({ to: form.get('to') ?? '', message: form.get('message') ?? '', from: form.get('from') ?? undefined, username: form.get('username') ?? undefined });
      const answer = smsAnswers.shift() ?? { statusCode: 101 };
      if ('httpStatus' in answer) return [answer.httpStatus, 'gateway trouble'];
      smsCounter += 1;
      const ok = answer.statusCode < 200;
      return [
        201,
        {
          SMSMessageData: {
            Message: ok ? 'Sent to 1/1 Total Cost: KES 0.8000' : 'Sent to 0/1',
            Recipients: [
              { statusCode: answer.statusCode, number: form.get('to'), status: ok ? 'Success' : 'Failed', cost: 'KES 0.8000', messageId: ok ? `ATXid_${process.pid}_${smsCounter}` : 'None' },
            ],
          },
        },
      ];
    });

  const t = buildTestApp(database, {
    env: {
      WABA_APP_SECRET: APP_SECRET,
      WABA_VERIFY_TOKEN: VERIFY_TOKEN,
      WABA_TOKEN: 'graph-token-secret',
      WABA_PHONE_ID: PHONE_ID,
      WABA_API_BASE_URL: graph.baseUrl,
      WABA_TIMEOUT_MS: '2000',
      SMS_API_KEY: 'at-api-key-secret',
      SMS_USERNAME: 'invoiceiq',
      SMS_SENDER_ID: 'INVOICEIQ',
      SMS_TIMEOUT_MS: '1000',
      DELIVERY_SAFETY_NET_SECONDS: '0',
      ...options.env,
    },
    ...(options.conversation === undefined ? {} : { conversation: options.conversation }),
    ...(options.jobs === undefined ? {} : { jobs: options.jobs }),
    ...(options.now === undefined ? {} : { now: options.now }),
  });

  await t.deps.jobs.start(t.deps.jobDefinitions);
  // Stopped before any job of theirs exists, so none is ever taken.
  for (const name of options.idleQueues ?? []) await t.deps.jobs.boss.offWork(name);

  return {
    ...t,
    database,
    graph,
    sms,
    smsAnswers,
    post(payload, headers) {
      const s = signed(payload);
      return Promise.resolve(t.app.request('/whatsapp/webhook', { method: 'POST', body: s.body, headers: { ...s.headers, ...headers } }));
    },
    async count(table) {
      const row = await database.handle.db.selectFrom(table).select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
      return Number(row.n);
    },
    async chatting(phone) {
      await sql`insert into conversations (phone, state, last_inbound_at) values (${phone}, '{"version":0}'::jsonb, now()) on conflict do nothing`.execute(database.handle.db);
    },
    sentTexts: (to) => graph.sentTo(to).map((r) => (r.body.text as { body: string }).body),
    async claimedElsewhere(id) {
      await database.handle.db.updateTable('outbound_messages').set({ status: 'sending', updated_at: sql`date_trunc('milliseconds', now())` }).where('id', '=', id).execute();
    },
    anotherOutbox: (options = {}) =>
      createOutbox({ db: database.handle.db, jobs: t.deps.jobs, whatsapp: t.deps.whatsapp, sms: t.deps.sms, config: t.deps.config, metrics: t.deps.metrics, logger: t.deps.logger, ...options }),
    async close() {
      await t.deps.outbox.idle();
      await t.deps.jobs.stop(2_000).catch(() => undefined);
      await graph.close();
      nock.cleanAll();
      nock.enableNetConnect();
      await database.dispose();
    },
  };
}

export async function waitFor(predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`${what} not met within ${timeoutMs} ms`);
}
