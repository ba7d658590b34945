/**
 * A fake Safaricom Daraja server on 127.0.0.1: OAuth, STK push and STK query over real HTTP.
 * Records every request; checks the Basic credentials and the Bearer tokens it issued; answers
 * pushes with a fresh `ws_CO_...` CheckoutRequestID unless scripted otherwise, and queries with
 * scripted answers (default: still being processed). `callbackBody` builds a callback exactly
 * as Safaricom posts it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type RecordedRequest = {
  method: string;
  /** Path with query string, as sent. */
  path: string;
  headers: IncomingMessage['headers'];
  body: Record<string, unknown>;
  receivedAt: number;
};

/** Answers shared by every endpoint. */
type CommonResponse =
  | { kind: 'error'; status: number; code: string; message?: string; retryAfter?: number }
  | { kind: 'hang' }
  | { kind: 'raw'; status: number; body: string };

export type FakeOAuthResponse = { kind: 'ok'; accessToken?: string; expiresIn?: string | number } | CommonResponse;

export type FakePushResponse =
  | { kind: 'ok'; checkoutRequestId?: string; merchantRequestId?: string; customerMessage?: string }
  /** HTTP 200 with a non-zero ResponseCode. */
  | { kind: 'rejected'; responseCode: string; description?: string }
  | CommonResponse;

export type FakeQueryResponse =
  /** The error Daraja gives while the customer has not answered: 500.001.1001 "being processed". */
  | { kind: 'pending' }
  | { kind: 'result'; resultCode: string | number; resultDesc?: string }
  | CommonResponse;

export type FakeDarajaOptions = {
  consumerKey: string;
  consumerSecret: string;
  /** `expires_in` of issued tokens (default "3599", a string as Daraja sends it). */
  expiresIn?: string | number;
};

export type FakeDaraja = {
  readonly baseUrl: string;
  readonly requests: RecordedRequest[];
  /** How many tokens OAuth has issued. */
  readonly tokensIssued: number;
  /** Every token issued, oldest first. */
  readonly tokens: readonly string[];
  setExpiresIn(expiresIn: string | number): void;
  queueOAuth(...responses: FakeOAuthResponse[]): void;
  /** Responses used in order for the next (authorised) pushes; when empty, success. */
  queuePush(...responses: FakePushResponse[]): void;
  /** Responses used in order for the next (authorised) queries; when empty, pending. */
  queueQuery(...responses: FakeQueryResponse[]): void;
  /** Every token issued so far answers 404.001.03 from now on. */
  revokeTokens(): void;
  /** Requests to one endpoint. */
  pushes(): RecordedRequest[];
  queries(): RecordedRequest[];
  oauthRequests(): RecordedRequest[];
  /** Drops scripts, recorded requests and the issued-token tally; revokes nothing; resets expires_in. */
  reset(): void;
  close(): Promise<void>;
};

export const OAUTH_PATH = '/oauth/v1/generate';
export const PUSH_PATH = '/mpesa/stkpush/v1/processrequest';
export const QUERY_PATH = '/mpesa/stkpushquery/v1/query';

let requestCounter = 0;
function requestId(): string {
  requestCounter += 1;
  return `${10000 + requestCounter}-${3_000_000 + requestCounter}-1`;
}

function sendJson(res: ServerResponse, status: number, body: unknown, extraHeaders: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...extraHeaders });
  res.end(JSON.stringify(body));
}

function darajaError(res: ServerResponse, status: number, errorCode: string, errorMessage: string, retryAfter?: number): void {
  sendJson(res, status, { requestId: requestId(), errorCode, errorMessage }, retryAfter === undefined ? {} : { 'retry-after': String(retryAfter) });
}

export async function startFakeDaraja(options: FakeDarajaOptions): Promise<FakeDaraja> {
  const requests: RecordedRequest[] = [];
  const oauthScript: FakeOAuthResponse[] = [];
  const pushScript: FakePushResponse[] = [];
  const queryScript: FakeQueryResponse[] = [];
  const issued: string[] = [];
  const valid = new Set<string>();
  /** CheckoutRequestID -> MerchantRequestID of pushes answered. */
  const pushed = new Map<string, string>();
  let expiresIn: string | number = options.expiresIn ?? '3599';
  let checkoutCounter = 0;
  const hanging = new Set<() => void>();
  const expectedBasic = `Basic ${Buffer.from(`${options.consumerKey}:${options.consumerSecret}`, 'utf8').toString('base64')}`;

  /** Handles what every endpoint shares; false when the response kind is endpoint-specific. */
  function common(res: ServerResponse, response: FakeOAuthResponse | FakePushResponse | FakeQueryResponse): boolean {
    switch (response.kind) {
      case 'error':
        darajaError(res, response.status, response.code, response.message ?? `error ${response.code}`, response.retryAfter);
        return true;
      case 'raw':
        res.writeHead(response.status, { 'content-type': 'text/plain' });
        res.end(response.body);
        return true;
      case 'hang': {
        const end = () => res.destroy();
        hanging.add(end);
        res.on('close', () => hanging.delete(end));
        return true;
      }
      default:
        return false;
    }
  }

  function oauth(req: IncomingMessage, res: ServerResponse, url: URL): void {
    if (req.method !== 'GET') return darajaError(res, 405, '405.001.01', 'Method not allowed');
    if (req.headers.authorization !== expectedBasic) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end('');
      return;
    }
    if (url.searchParams.get('grant_type') !== 'client_credentials') return darajaError(res, 400, '400.008.02', 'Invalid grant type passed');
    const response = oauthScript.shift() ?? { kind: 'ok' };
    if (common(res, response)) return;
    if (response.kind !== 'ok') return;
    const token = response.accessToken ?? `fakeToken${String(issued.length + 1).padStart(4, '0')}${Math.random().toString(36).slice(2, 10)}`;
    issued.push(token);
    valid.add(token);
    sendJson(res, 200, { access_token: token, expires_in: response.expiresIn ?? expiresIn });
  }

  /** Checks the Bearer token; answers and returns false when it is missing, unknown or revoked. */
  function authorised(req: IncomingMessage, res: ServerResponse): boolean {
    const header = req.headers.authorization ?? '';
    const match = /^Bearer (\S+)$/.exec(header);
    if (match === null) {
      darajaError(res, 404, '404.001.04', 'Invalid Authentication Header');
      return false;
    }
    if (!valid.has(match[1] ?? '')) {
      darajaError(res, 404, '404.001.03', 'Invalid Access Token');
      return false;
    }
    return true;
  }

  function push(res: ServerResponse): void {
    const response = pushScript.shift() ?? { kind: 'ok' };
    if (common(res, response)) return;
    switch (response.kind) {
      case 'ok': {
        checkoutCounter += 1;
        const stamp = String(checkoutCounter).padStart(6, '0');
        const checkoutRequestId = response.checkoutRequestId ?? `ws_CO_221120261215${stamp}${Math.random().toString(36).slice(2, 8)}`;
        const merchantRequestId = response.merchantRequestId ?? `29115-34620561-${checkoutCounter}`;
        pushed.set(checkoutRequestId, merchantRequestId);
        sendJson(res, 200, {
          MerchantRequestID: merchantRequestId,
          CheckoutRequestID: checkoutRequestId,
          ResponseCode: '0',
          ResponseDescription: 'Success. Request accepted for processing',
          CustomerMessage: response.customerMessage ?? 'Success. Request accepted for processing',
        });
        return;
      }
      case 'rejected':
        sendJson(res, 200, {
          MerchantRequestID: '',
          CheckoutRequestID: '',
          ResponseCode: response.responseCode,
          ResponseDescription: response.description ?? 'Rejected',
          CustomerMessage: response.description ?? 'Rejected',
        });
        return;
    }
  }

  function query(res: ServerResponse, body: Record<string, unknown>): void {
    const response = queryScript.shift() ?? { kind: 'pending' };
    if (common(res, response)) return;
    const checkoutRequestId = typeof body.CheckoutRequestID === 'string' ? body.CheckoutRequestID : '';
    switch (response.kind) {
      case 'pending':
        darajaError(res, 500, '500.001.1001', 'The transaction is being processed');
        return;
      case 'result':
        sendJson(res, 200, {
          ResponseCode: '0',
          ResponseDescription: 'The service request has been accepted successsfully',
          MerchantRequestID: pushed.get(checkoutRequestId) ?? '29115-34620561-0',
          CheckoutRequestID: checkoutRequestId,
          ResultCode: response.resultCode,
          ResultDesc: response.resultDesc ?? (String(response.resultCode) === '0' ? 'The service request is processed successfully.' : 'Request cancelled by user'),
        });
        return;
    }
  }

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
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      if (url.pathname === OAUTH_PATH) return oauth(req, res, url);
      if (url.pathname === PUSH_PATH || url.pathname === QUERY_PATH) {
        if (req.method !== 'POST') return darajaError(res, 405, '405.001.01', 'Method not allowed');
        if (!authorised(req, res)) return;
        return url.pathname === PUSH_PATH ? push(res) : query(res, body);
      }
      darajaError(res, 404, '404.001.01', 'Resource not found');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const byPath = (path: string) => requests.filter((r) => new URL(r.path, 'http://127.0.0.1').pathname === path);

  return {
    baseUrl: `http://127.0.0.1:${port}`,
    requests,
    get tokensIssued() {
      return issued.length;
    },
    get tokens() {
      return [...issued];
    },
    setExpiresIn(value) {
      expiresIn = value;
    },
    queueOAuth: (...responses) => oauthScript.push(...responses),
    queuePush: (...responses) => pushScript.push(...responses),
    queueQuery: (...responses) => queryScript.push(...responses),
    revokeTokens: () => valid.clear(),
    pushes: () => byPath(PUSH_PATH),
    queries: () => byPath(QUERY_PATH),
    oauthRequests: () => byPath(OAUTH_PATH),
    reset() {
      requests.length = 0;
      oauthScript.length = 0;
      pushScript.length = 0;
      queryScript.length = 0;
      issued.length = 0;
      expiresIn = options.expiresIn ?? '3599';
    },
    async close() {
      for (const end of hanging) end();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export type CallbackBodyInput = {
  checkoutRequestId: string;
  merchantRequestId: string;
  resultCode: number;
  resultDesc: string;
  amount?: number;
  receipt?: string;
  /** '2547XXXXXXXX' (sent as a number, as Safaricom does). */
  phone?: string;
  /** 'YYYYMMDDHHmmss' (sent as a number); default 20261122121530. */
  transactionDate?: string;
};

/**
 * The callback Safaricom POSTs to CallBackURL. CallbackMetadata (Amount, MpesaReceiptNumber,
 * Balance without a Value, TransactionDate, PhoneNumber, numbers as numbers) only on success.
 */
export function callbackBody(input: CallbackBodyInput): {
  Body: {
    stkCallback: {
      MerchantRequestID: string;
      CheckoutRequestID: string;
      ResultCode: number;
      ResultDesc: string;
      CallbackMetadata?: { Item: Array<{ Name: string; Value?: number | string }> };
    };
  };
} {
  const stkCallback = {
    MerchantRequestID: input.merchantRequestId,
    CheckoutRequestID: input.checkoutRequestId,
    ResultCode: input.resultCode,
    ResultDesc: input.resultDesc,
  };
  if (input.resultCode !== 0) return { Body: { stkCallback } };
  return {
    Body: {
      stkCallback: {
        ...stkCallback,
        CallbackMetadata: {
          Item: [
            { Name: 'Amount', Value: input.amount ?? 1 },
            { Name: 'MpesaReceiptNumber', Value: input.receipt ?? 'NLJ7RT61SV' },
            { Name: 'Balance' },
            { Name: 'TransactionDate', Value: Number(input.transactionDate ?? '20261122121530') },
            { Name: 'PhoneNumber', Value: Number(input.phone ?? '254708374149') },
          ],
        },
      },
    },
  };
}
