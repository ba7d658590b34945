/**
 * The whole service in simulator mode (startService, as `npm start` with no accounts) on a
 * test database, driven over real HTTP through the simulator's browser API.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config.js';
import { startService, type RunningService } from '../../src/service.js';
import type { ChatItem, SendRequest, SimulatorState, Switches, Who } from '../../src/simulator/contract.js';
import { SimulatorState as SimulatorStateSchema } from '../../src/simulator/contract.js';
import { captureLogs, type LogCapture } from './app.js';
import { createTestDatabase, type TestDatabase } from './database.js';

export type SimulatorRun = {
  readonly service: RunningService;
  readonly baseUrl: string;
  readonly logs: LogCapture;
  state(): Promise<SimulatorState>;
  send(who: Who, request: SendRequest): Promise<Response>;
  post(path: string, body?: unknown, method?: string): Promise<Response>;
  switches(change: Partial<Switches>): Promise<Switches>;
  /** Polls the state until `check` returns a value (not undefined); fails after `timeoutMs`. */
  waitFor<T>(what: string, check: (state: SimulatorState) => T | undefined, timeoutMs?: number): Promise<T>;
  stop(): Promise<void>;
};

export const MERCHANT = '254711000001';
export const CUSTOMER = '254722000002';

/** The text a chat item shows (body of text, buttons, list or template; title of a tap). */
export function textOf(item: ChatItem): string {
  return item.content.type === 'tap' ? item.content.title : item.content.body;
}

/** The newest bot message on `who`'s chat that matches `pattern`. */
export function botMessage(state: SimulatorState, who: Who, pattern: RegExp): ChatItem | undefined {
  return state.chats[who].filter((item) => item.from === 'bot' && pattern.test(textOf(item))).at(-1);
}

export async function startSimulatorService(env: Record<string, string> = {}, options: { promptTimeoutMs?: number } = {}): Promise<SimulatorRun> {
  const database: TestDatabase | undefined = process.env.TEST_DATABASE_URL?.trim() ? await createTestDatabase() : undefined;
  const dataDir = mkdtempSync(join(tmpdir(), 'invoiceiq-sim-'));
  const config = loadConfig({
    APP_ENV: 'development',
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    DATA_DIR: dataDir,
    ...(database?.url === undefined ? {} : { DATABASE_URL: database.url }),
    ...env,
  });
  const logs = captureLogs('info');
  const service = await startService(config, logs.logger, { simulator: { statusDelaysMs: [20, 60, 120], ...(options.promptTimeoutMs === undefined ? {} : { promptTimeoutMs: options.promptTimeoutMs }) } });
  const baseUrl = `http://127.0.0.1:${service.port}`;
  const post = (path: string, body?: unknown, method = 'POST') =>
    fetch(`${baseUrl}${path}`, { method, headers: { 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const state = async () => SimulatorStateSchema.parse(await (await fetch(`${baseUrl}/simulator/api/state`)).json());
  return {
    service,
    baseUrl,
    logs,
    state,
    post,
    send: (who, request) => post(`/simulator/api/phones/${who}/send`, request),
    async switches(change) {
      const response = await post('/simulator/api/switches', change, 'PUT');
      if (response.status !== 200) throw new Error(`switches answered ${response.status}`);
      return (await response.json()) as Switches;
    },
    async waitFor(what, check, timeoutMs = 15_000) {
      const deadline = performance.now() + timeoutMs;
      let last: SimulatorState | undefined;
      for (;;) {
        last = await state();
        const value = check(last);
        if (value !== undefined) return value;
        if (performance.now() > deadline) {
          throw new Error(`timed out waiting for ${what}; chats: ${JSON.stringify(last.chats)}; sms: ${JSON.stringify(last.sms)}; log: ${JSON.stringify(last.log.slice(0, 12))}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async stop() {
      await service.stop();
      rmSync(dataDir, { recursive: true, force: true });
      if (database !== undefined) await database.dispose();
    },
  };
}
