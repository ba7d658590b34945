/**
 * Safaricom Daraja client for M-PESA Express: STK push and STK query, over an OAuth token
 * cached per client. Every failure becomes a ProviderError (Daraja answered; `code` is
 * Daraja's errorCode) or a TransportError (no answer), each classified retryable or not.
 * A factory over axios with a timeout on every call. Secrets (consumer secret, passkey, the
 * Password derived from it, the token) never appear in an error message.
 */
import type { AxiosInstance } from 'axios';
import { createProviderHttp } from '../http.js';
import { ProviderError, TransportError } from '../errors.js';
import { classifyAxiosError } from '../whatsapp/client.js';
import { DarajaErrorBody, OAuthResponse, ResponseVerdict, StkPushResponse, StkQueryResponse } from './schemas.js';

export type DarajaSettings = {
  baseUrl: string;
  consumerKey: string | undefined;
  consumerSecret: string | undefined;
  shortcode: string | undefined;
  passkey: string | undefined;
  transactionType: 'CustomerPayBillOnline' | 'CustomerBuyGoodsOnline';
  /** Till number for buy goods; defaults to the shortcode. */
  partyB: string | undefined;
  timeoutMs: number;
  /** Injected clock (token expiry, Timestamp). */
  now?: () => Date;
};

export type StkPushRequest = {
  amount: number;
  /** 2547XXXXXXXX / 2541XXXXXXXX */
  phone: string;
  /** At most 12 characters; shown on the phone. */
  accountReference: string;
  description: string;
  callbackUrl: string;
};

export type StkPushAccepted = { merchantRequestId: string; checkoutRequestId: string; customerMessage: string };

export type StkQueryResult = { state: 'pending' } | { state: 'completed'; resultCode: number; resultDesc: string };

export type DarajaClient = {
  readonly configured: boolean;
  stkPush(request: StkPushRequest): Promise<StkPushAccepted>;
  stkQuery(checkoutRequestId: string): Promise<StkQueryResult>;
};

const PROVIDER = 'mpesa';

/** Refresh the token when fewer than this many seconds of its `expires_in` remain. */
const REFRESH_MARGIN_SECONDS = 60;

export const MIN_AMOUNT = 1;
export const MAX_AMOUNT = 250_000;
export const MAX_ACCOUNT_REFERENCE = 12;
export const MAX_TRANSACTION_DESC = 13;
export const DEFAULT_TRANSACTION_DESC = 'Invoice';

/** Invalid access token: refresh once and retry once. */
const INVALID_TOKEN = '404.001.03';
/** On push: a transaction is already in process for this phone. On query: still being processed. */
const IN_PROCESS = '500.001.1001';
/** Worth another try later: spike arrest, quota, "already in process". */
const retryableCodes = new Set(['500.003.02', '500.003.03', IN_PROCESS]);
/** Never worth another try as is. */
const finalCodes = new Set(['400.002.02']);

const NAIROBI_OFFSET_MS = 3 * 60 * 60 * 1000;

/** `YYYYMMDDHHmmss` in Africa/Nairobi time (UTC+3 all year, no DST). */
export function darajaTimestamp(at: Date): string {
  const nairobi = new Date(at.getTime() + NAIROBI_OFFSET_MS);
  const two = (n: number) => String(n).padStart(2, '0');
  return (
    String(nairobi.getUTCFullYear()).padStart(4, '0') +
    two(nairobi.getUTCMonth() + 1) +
    two(nairobi.getUTCDate()) +
    two(nairobi.getUTCHours()) +
    two(nairobi.getUTCMinutes()) +
    two(nairobi.getUTCSeconds())
  );
}

/** base64(shortcode + passkey + timestamp). */
export function stkPassword(shortcode: string, passkey: string, timestamp: string): string {
  return Buffer.from(`${shortcode}${passkey}${timestamp}`, 'utf8').toString('base64');
}

/** TransactionDesc: trimmed, at most 13 characters, never empty. */
export function transactionDesc(description: string): string {
  const cut = Array.from(description.trim()).slice(0, MAX_TRANSACTION_DESC).join('').trimEnd();
  return cut === '' ? DEFAULT_TRANSACTION_DESC : cut;
}

function present(value: string | undefined): value is string {
  return value !== undefined && value !== '';
}

function darajaErrorOf(data: unknown): { code?: string; message?: string } {
  const parsed = DarajaErrorBody.safeParse(data);
  if (!parsed.success) return {};
  const { errorCode, errorMessage } = parsed.data;
  return { code: errorCode, ...(errorMessage === undefined ? {} : { message: errorMessage }) };
}

export function isDarajaRetryable(httpStatus: number | undefined, code: string | undefined): boolean {
  if (code !== undefined && retryableCodes.has(code)) return true;
  if (code !== undefined && finalCodes.has(code)) return false;
  if (httpStatus === undefined) return false;
  return httpStatus >= 500 || httpStatus === 429;
}

type Credentials = { consumerKey: string; consumerSecret: string; shortcode: string; passkey: string };
type CachedToken = { value: string; refreshAt: number };

function basicAuth(creds: Credentials): string {
  return Buffer.from(`${creds.consumerKey}:${creds.consumerSecret}`, 'utf8').toString('base64');
}

/**
 * 500.001.1001 on a query means "The transaction is being processed", but the same code also
 * carries unrelated failures (e.g. "Wrong credentials"): only a message about processing, or
 * no message at all, counts as pending.
 */
function saysBeingProcessed(error: ProviderError): boolean {
  return /process/i.test(error.message) || error.message === `HTTP ${error.httpStatus}` || error.message === `error ${IN_PROCESS}`;
}

export function createDarajaClient(settings: DarajaSettings, http: AxiosInstance = createProviderHttp()): DarajaClient {
  const now = settings.now ?? (() => new Date());
  const credentials: Credentials | undefined =
    present(settings.consumerKey) && present(settings.consumerSecret) && present(settings.shortcode) && present(settings.passkey)
      ? { consumerKey: settings.consumerKey, consumerSecret: settings.consumerSecret, shortcode: settings.shortcode, passkey: settings.passkey }
      : undefined;
  const baseUrl = settings.baseUrl.replace(/\/+$/, '');

  let cached: CachedToken | undefined;
  let inFlight: Promise<string> | undefined;
  /** Fixed strings that must never leave in an error message. */
  const fixedSecrets = credentials === undefined ? [] : [credentials.consumerSecret, credentials.passkey, basicAuth(credentials)];
  /** The latest tokens issued (bounded), redacted too. */
  const recentTokens: string[] = [];

  function redact(text: string): string {
    let safe = text;
    for (const secret of [...fixedSecrets, ...recentTokens]) if (secret.length >= 4) safe = safe.split(secret).join('[redacted]');
    // Passwords (base64 of shortcode+passkey+timestamp) and any other long base64 run.
    return safe.replace(/[A-Za-z0-9+/]{40,}={0,2}/g, '[redacted]');
  }

  /** Classifies an axios failure with Daraja's codes and retry rules; strips secrets. */
  function classify(error: unknown): ProviderError | TransportError {
    if (error instanceof ProviderError || error instanceof TransportError) return error;
    const classified = classifyAxiosError(PROVIDER, error, darajaErrorOf);
    if (classified instanceof TransportError) {
      return new TransportError({ provider: PROVIDER, reason: classified.reason, message: redact(classified.message) });
    }
    return new ProviderError({
      provider: PROVIDER,
      message: redact(classified.message),
      ...(classified.httpStatus === undefined ? {} : { httpStatus: classified.httpStatus }),
      ...(classified.code === undefined ? {} : { code: classified.code }),
      retryable: isDarajaRetryable(classified.httpStatus, classified.code),
      ...(classified.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: classified.retryAfterSeconds }),
    });
  }

  /** A 200 that carries Daraja's error body instead of the expected answer. */
  function errorInSuccess(status: number, data: unknown): ProviderError | undefined {
    const { code, message } = darajaErrorOf(data);
    if (code === undefined) return undefined;
    return new ProviderError({
      provider: PROVIDER,
      message: redact(message ?? `error ${code}`),
      httpStatus: status,
      code,
      retryable: isDarajaRetryable(undefined, code),
    });
  }

  function requireCredentials(): Credentials {
    if (credentials === undefined) {
      throw new TransportError({
        provider: PROVIDER,
        reason: 'not_configured',
        message: 'MPESA consumer key / consumer secret / shortcode / passkey are not all set',
      });
    }
    return credentials;
  }

  async function fetchToken(creds: Credentials): Promise<string> {
    const requestedAt = now().getTime();
    const basic = basicAuth(creds);
    try {
      const response = await http.get(`${baseUrl}/oauth/v1/generate`, {
        params: { grant_type: 'client_credentials' },
        timeout: settings.timeoutMs,
        headers: { Authorization: `Basic ${basic}`, Accept: 'application/json' },
      });
      const parsed = OAuthResponse.safeParse(response.data);
      if (!parsed.success) {
        // No side effect on Daraja's side: asking again is safe (the sandbox sometimes answers empty).
        throw errorInSuccess(response.status, response.data) ??
          new ProviderError({ provider: PROVIDER, message: 'unexpected OAuth answer', httpStatus: response.status, retryable: true });
      }
      const { access_token: value, expires_in: expiresIn } = parsed.data;
      recentTokens.push(value);
      if (recentTokens.length > 4) recentTokens.shift();
      const refreshAt = requestedAt + Math.max(0, expiresIn - REFRESH_MARGIN_SECONDS) * 1000;
      cached = { value, refreshAt };
      return value;
    } catch (error) {
      throw classify(error);
    }
  }

  /**
   * The cached token while more than 60 s of it remain; otherwise a fresh one. Concurrent
   * callers share one request. `rejected` (a token Daraja just refused) is never handed back.
   */
  function token(creds: Credentials, rejected?: string): Promise<string> {
    if (cached !== undefined && cached.value !== rejected && now().getTime() < cached.refreshAt) {
      return Promise.resolve(cached.value);
    }
    if (cached !== undefined && cached.value === rejected) cached = undefined;
    if (inFlight === undefined) {
      inFlight = fetchToken(creds).finally(() => {
        inFlight = undefined;
      });
    }
    return inFlight;
  }

  function isInvalidToken(error: unknown): error is ProviderError {
    return error instanceof ProviderError && error.code === INVALID_TOKEN;
  }

  /** POSTs with a Bearer token; on 404.001.03 refreshes the token once and retries once. */
  async function authorizedPost(creds: Credentials, path: string, body: (timestamp: string, password: string) => Record<string, unknown>): Promise<{ status: number; data: unknown }> {
    const attempt = async (bearer: string) => {
      const timestamp = darajaTimestamp(now());
      const password = stkPassword(creds.shortcode, creds.passkey, timestamp);
      try {
        const response = await http.post(`${baseUrl}${path}`, body(timestamp, password), {
          timeout: settings.timeoutMs,
          headers: { Authorization: `Bearer ${bearer}`, 'Content-Type': 'application/json', Accept: 'application/json' },
        });
        const inBody = errorInSuccess(response.status, response.data);
        if (inBody !== undefined) throw inBody;
        return { status: response.status, data: response.data as unknown };
      } catch (error) {
        throw classify(error);
      }
    };
    const first = await token(creds);
    try {
      return await attempt(first);
    } catch (error) {
      if (!isInvalidToken(error)) throw error;
    }
    const fresh = await token(creds, first);
    try {
      return await attempt(fresh);
    } catch (error) {
      // A second "invalid token" right after a fresh one: something is wrong with the app, not the token.
      if (isInvalidToken(error)) {
        throw new ProviderError({
          provider: PROVIDER,
          message: `${error.message} (again after a token refresh)`,
          ...(error.httpStatus === undefined ? {} : { httpStatus: error.httpStatus }),
          code: INVALID_TOKEN,
          retryable: false,
        });
      }
      throw error;
    }
  }

  function refuse(code: string, message: string): ProviderError {
    return new ProviderError({ provider: PROVIDER, message, code, retryable: false });
  }

  /** A 200 whose ResponseCode is not "0": Daraja refused; its ResponseCode is the error code. */
  function refuseNonZero(status: number, data: unknown): void {
    const verdict = ResponseVerdict.safeParse(data);
    if (!verdict.success || verdict.data.ResponseCode === '0') return;
    const { ResponseCode: code, ResponseDescription: description } = verdict.data;
    throw new ProviderError({
      provider: PROVIDER,
      message: redact(description === undefined || description === '' ? `ResponseCode ${code}` : description),
      httpStatus: status,
      code,
      retryable: false,
    });
  }

  async function stkPush(request: StkPushRequest): Promise<StkPushAccepted> {
    const creds = requireCredentials();
    if (!Number.isInteger(request.amount) || request.amount < MIN_AMOUNT || request.amount > MAX_AMOUNT) {
      throw refuse('invalid_amount', `amount must be a whole number from ${MIN_AMOUNT} to ${MAX_AMOUNT}`);
    }
    if (request.accountReference.length === 0 || request.accountReference.length > MAX_ACCOUNT_REFERENCE) {
      throw refuse('invalid_account_reference', `AccountReference must be 1 to ${MAX_ACCOUNT_REFERENCE} characters`);
    }
    const { status, data } = await authorizedPost(creds, '/mpesa/stkpush/v1/processrequest', (timestamp, password) => ({
      BusinessShortCode: creds.shortcode,
      Password: password,
      Timestamp: timestamp,
      TransactionType: settings.transactionType,
      Amount: request.amount,
      PartyA: request.phone,
      PartyB: present(settings.partyB) ? settings.partyB : creds.shortcode,
      PhoneNumber: request.phone,
      CallBackURL: request.callbackUrl,
      AccountReference: request.accountReference,
      TransactionDesc: transactionDesc(request.description),
    }));
    refuseNonZero(status, data);
    const parsed = StkPushResponse.safeParse(data);
    if (!parsed.success) {
      // Daraja may have accepted the push: not retryable, or the customer may get two prompts.
      throw new ProviderError({ provider: PROVIDER, message: 'unexpected STK push answer', httpStatus: status, retryable: false });
    }
    return {
      merchantRequestId: parsed.data.MerchantRequestID,
      checkoutRequestId: parsed.data.CheckoutRequestID,
      customerMessage: parsed.data.CustomerMessage,
    };
  }

  async function stkQuery(checkoutRequestId: string): Promise<StkQueryResult> {
    const creds = requireCredentials();
    let answer: { status: number; data: unknown };
    try {
      answer = await authorizedPost(creds, '/mpesa/stkpushquery/v1/query', (timestamp, password) => ({
        BusinessShortCode: creds.shortcode,
        Password: password,
        Timestamp: timestamp,
        CheckoutRequestID: checkoutRequestId,
      }));
    } catch (error) {
      // 500.001.1001 "The transaction is being processed": no result yet.
      if (error instanceof ProviderError && error.code === IN_PROCESS && saysBeingProcessed(error)) {
        return { state: 'pending' };
      }
      throw error;
    }
    refuseNonZero(answer.status, answer.data);
    const parsed = StkQueryResponse.safeParse(answer.data);
    if (!parsed.success) {
      throw new ProviderError({ provider: PROVIDER, message: 'unexpected STK query answer', httpStatus: answer.status, retryable: true });
    }
    return { state: 'completed', resultCode: parsed.data.ResultCode, resultDesc: parsed.data.ResultDesc };
  }

  return { configured: credentials !== undefined, stkPush, stkQuery };
}
