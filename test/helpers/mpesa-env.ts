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
