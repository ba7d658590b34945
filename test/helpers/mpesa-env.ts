import { after, before, beforeEach } from 'node:test';
import { startFakeDaraja, type FakeDaraja } from '../fakes/daraja.js';
import { startChannelFixture, type ChannelFixture } from './channel.js';

/**
 * The M-PESA settings of a test app that talks to a fake Daraja (test/fakes/daraja.ts), with the
 * credentials the fake expects; the callback URL's base is what tokens are cut from.
 */
export const MPESA_TEST = {
  consumerKey: 'consumer-key-test',
  consumerSecret: 'consumer-secret-test',
  shortcode: '174379',
  passkey: 'bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919',
  callbackBase: 'https://invoiceiq.example/payments/stk/callback',
} as const;

/** The environment for a fixture whose pushes go to the fake Daraja at `darajaBaseUrl`, safety-net jobs an hour away. */
export function mpesaEnv(darajaBaseUrl: string): Record<string, string> {
  return {
    DELIVERY_SAFETY_NET_SECONDS: '3600',
    MPESA_CONSUMER_KEY: MPESA_TEST.consumerKey,
    MPESA_CONSUMER_SECRET: MPESA_TEST.consumerSecret,
    MPESA_SHORTCODE: MPESA_TEST.shortcode,
    MPESA_PASSKEY: MPESA_TEST.passkey,
    MPESA_CALLBACK_URL: MPESA_TEST.callbackBase,
    MPESA_API_BASE_URL: darajaBaseUrl,
    MPESA_TIMEOUT_MS: '2000',
  };
}

/**
 * A file's channel fixture (on the test clock `now`) whose pushes go to a fake Daraja: both
 * started before the file's tests and handed to `use`, closed after them; the fake's records
 * cleared before each test.
 */
export function mpesaSuite(now: () => Date, use: (fixture: ChannelFixture, daraja: FakeDaraja) => void): void {
  let fixture: ChannelFixture | undefined;
  let daraja: FakeDaraja | undefined;
  before(async () => {
    daraja = await startFakeDaraja({ consumerKey: MPESA_TEST.consumerKey, consumerSecret: MPESA_TEST.consumerSecret });
    fixture = await startChannelFixture({ now, env: mpesaEnv(daraja.baseUrl) });
    use(fixture, daraja);
  });
  after(async () => {
    await fixture?.close();
    await daraja?.close();
  });
  beforeEach(() => daraja?.reset());
}
