/**
 * The axios instance every provider client uses by default. Provider APIs answer where they
 * are asked, so redirects are not followed (a 3xx is an error like any other non-2xx).
 * Connections are kept alive and reused.
 *
 * axios does the configuration, the JSON on both ways, status validation and its errors; the
 * request itself goes through a small adapter over undici's dispatcher (leanAdapter) instead
 * of axios's own over node:http, which also handles redirects, proxies from the environment,
 * compressed and streamed bodies and upload progress, none of which a provider call here
 * uses. undici writes a request's head and body in one go and reads the answer without
 * node:http's stream machinery: a WhatsApp send to a local server, 64 and 256 at a time,
 * cost 120-190 us of the sender's CPU through the node:http adapter and 63-75 us this way
 * (exp micro-benchmark, README "Known limits"). No proxy is used.
 */
import axios, { AxiosError, AxiosHeaders, type AxiosAdapter, type AxiosInstance, type AxiosRequestConfig, type AxiosResponse, type InternalAxiosRequestConfig, type RawAxiosHeaders } from 'axios';
import { Agent, type Dispatcher } from 'undici';

/** Who calls, on every provider request that does not say otherwise. */
export const USER_AGENT = 'InvoiceIQ/0.1 (+node)';

/** The most a provider's answer may hold; a larger one is an error (no provider answer here is near it). */
export const MAX_RESPONSE_BYTES = 1024 * 1024;

/** The request's URL: `url` (absolute, or on `baseURL`) with `params` appended. */
function requestUrl(config: InternalAxiosRequestConfig): URL {
  const url = new URL(config.url ?? '', config.baseURL);
  const params: unknown = config.params;
  if (params instanceof URLSearchParams) {
    for (const [key, value] of params) url.searchParams.append(key, value);
  } else if (typeof params === 'object' && params !== null) {
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null) url.searchParams.append(key, String(value));
    }
  }
  return url;
}

/** The body as axios's request transform left it (JSON text for an object). */
function requestBody(data: unknown): string | Buffer | undefined {
  if (data === undefined || data === null) return undefined;
  if (typeof data === 'string' || Buffer.isBuffer(data)) return data;
  if (data instanceof URLSearchParams) return data.toString();
  throw new AxiosError('unsupported request body (only text, JSON or a Buffer)', AxiosError.ERR_BAD_REQUEST);
}

/**
 * An axios adapter over an undici dispatcher (its connection pool). It honours `timeout` as a
 * deadline for the whole call (waiting for a connection, connecting, sending, the answer),
 * answering the same AxiosError as axios's adapter (ECONNABORTED, or ETIMEDOUT with
 * transitional.clarifyTimeoutError), and `signal`; the status is checked with `validateStatus`
 * as axios's own `settle` does. A call that ends while it still waits for a connection is
 * dropped by the pool when its turn comes, unsent: it never takes a connection.
 */
export function leanAdapter(dispatcher: Dispatcher, maxResponseBytes = MAX_RESPONSE_BYTES): AxiosAdapter {
  const adapter: AxiosAdapter = (config) =>
    new Promise<AxiosResponse>((resolve, reject) => {
      let url: URL;
      let body: string | Buffer | undefined;
      try {
        url = requestUrl(config);
        body = requestBody(config.data);
      } catch (error) {
        reject(error instanceof AxiosError ? error : AxiosError.from(error as Error, AxiosError.ERR_BAD_REQUEST, config));
        return;
      }
      if (url.protocol !== 'https:' && url.protocol !== 'http:') {
        reject(new AxiosError(`unsupported protocol ${url.protocol}`, AxiosError.ERR_BAD_REQUEST, config));
        return;
      }
      // undici writes Content-Length for the body itself (and refuses one that disagrees).
      const headers = config.headers.toJSON(true) as Record<string, string>;
      let userAgent = false;
      for (const name of Object.keys(headers)) {
        const lower = name.toLowerCase();
        if (lower === 'content-length') delete headers[name];
        else if (lower === 'user-agent') userAgent = true;
      }
      // Some firewalls in front of APIs refuse calls that name no client.
      if (!userAgent) headers['User-Agent'] = USER_AGENT;

      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      /** The running request's controller, once the pool has given it a connection. */
      let controller: Dispatcher.DispatchController | undefined;
      /** Why the call ended before it had a connection: it is dropped, unsent, when its turn comes. */
      let endedEarly: Error | undefined;
      const chunks: Buffer[] = [];
      let size = 0;
      let status = 0;
      let statusText = '';
      let responseHeaders: Record<string, string | string[] | undefined> = {};

      /** Ends the call once (false if it had ended): the deadline and the abort listener go with it. */
      const settle = (): boolean => {
        if (settled) return false;
        settled = true;
        clearTimeout(timer);
        config.signal?.removeEventListener?.('abort', onAbort);
        return true;
      };
      const fail = (error: AxiosError): void => {
        if (!settle()) return;
        if (controller === undefined) endedEarly = error;
        else if (!controller.aborted) controller.abort(error);
        reject(error);
      };
      const onAbort = (): void => fail(new AxiosError('canceled', AxiosError.ERR_CANCELED, config));

      if (config.signal !== undefined) {
        if (config.signal.aborted === true) {
          settled = true;
          reject(new AxiosError('canceled', AxiosError.ERR_CANCELED, config));
          return;
        }
        config.signal.addEventListener?.('abort', onAbort);
      }
      if (config.timeout !== undefined && config.timeout > 0) {
        timer = setTimeout(() => {
          const code = config.transitional?.clarifyTimeoutError === true ? AxiosError.ETIMEDOUT : AxiosError.ECONNABORTED;
          fail(new AxiosError(config.timeoutErrorMessage ?? `timeout of ${config.timeout}ms exceeded`, code, config));
        }, config.timeout);
      }

      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(started) {
          controller = started;
          if (endedEarly !== undefined) started.abort(endedEarly);
        },
        onResponseStart(_controller, statusCode, received, message) {
          status = statusCode;
          statusText = message ?? '';
          responseHeaders = received;
        },
        onResponseData(_controller, chunk) {
          size += chunk.length;
          if (size > maxResponseBytes) fail(new AxiosError(`maxContentLength size of ${maxResponseBytes} exceeded`, AxiosError.ERR_BAD_RESPONSE, config));
          else chunks.push(chunk);
        },
        onResponseEnd() {
          if (!settle()) return;
          const text = Buffer.concat(chunks).toString('utf8');
          const response: AxiosResponse = {
            // A byte order mark would keep axios from reading the JSON (its own adapter drops it too).
            data: text.charCodeAt(0) === 0xfeff ? text.slice(1) : text,
            status,
            statusText,
            headers: new AxiosHeaders(responseHeaders as RawAxiosHeaders),
            config,
          };
          const valid = config.validateStatus;
          if (!response.status || !valid || valid(response.status)) resolve(response);
          else {
            const code = response.status >= 400 && response.status < 500 ? AxiosError.ERR_BAD_REQUEST : AxiosError.ERR_BAD_RESPONSE;
            reject(new AxiosError(`Request failed with status code ${response.status}`, code, config, undefined, response));
          }
        },
        onResponseError(_controller, error: Error & { code?: string }) {
          // Our own ending (the deadline, a cancel, the size cap) has already answered.
          fail(error instanceof AxiosError ? error : AxiosError.from(error, error.code, config));
        },
      };
      try {
        dispatcher.dispatch({ origin: url.origin, path: `${url.pathname}${url.search}`, method: (config.method ?? 'get').toUpperCase() as Dispatcher.HttpMethod, headers, body: body ?? null }, handler);
      } catch (error) {
        fail(AxiosError.from(error as Error, (error as { code?: string }).code, config));
      }
    });
  leanAdapters.add(adapter);
  return adapter;
}

/** The adapters leanAdapter made: preparedJsonPost knows what they read of a configuration. */
const leanAdapters = new WeakSet<AxiosAdapter>();

/**
 * JSON text as axios's default response transform reads it: parsed when it is JSON, otherwise
 * left as it came (a proxy's HTML error page, say).
 */
function readJson(data: unknown): unknown {
  if (typeof data !== 'string' || data === '') return data;
  try {
    return JSON.parse(data) as unknown;
  } catch {
    return data;
  }
}

/**
 * POSTs of JSON that share one configuration (the WhatsApp send: every outbound message).
 * `http.post` merges the instance's and the call's configuration on every call (mergeConfig,
 * header flattening, request and response transforms): measured at about a third of the CPU
 * of a whole send (a WhatsApp send to a local server, 32 at a time: 340-410 us of CPU through
 * http.post, 245-290 us this way; README, "Known limits"). This merges once, as axios would for such
 * a call, and each call hands the instance's lean adapter a copy carrying its own url and body;
 * the answer's JSON is read as axios reads it, on success and in an error's response alike, so
 * callers see the same AxiosResponse and AxiosError. An instance with any other adapter (one
 * whose reading of the configuration is not known here), or with interceptors, goes through
 * `http.post` unchanged. The instance's defaults are read once, here: later changes to them
 * are not seen.
 */
export function preparedJsonPost(
  http: AxiosInstance,
  options: { timeout: number; headers: Record<string, string> },
): (url: string, body: unknown) => Promise<AxiosResponse> {
  const adapter = http.defaults.adapter;
  if (typeof adapter !== 'function' || !leanAdapters.has(adapter)) return (url, body) => http.post(url, body, options);
  const merged = axios.mergeConfig(http.defaults as AxiosRequestConfig, { ...options, method: 'post' });
  const sets = (merged.headers ?? {}) as Record<string, unknown>;
  // The per-method sets (common, get, post, ... whatever this axios version has) are objects;
  // flattened away, as Axios#request does: a header's own value is text, a number or a list.
  const own = Object.fromEntries(Object.entries(sets).filter(([, value]) => typeof value !== 'object' || value === null || Array.isArray(value)));
  const headers = AxiosHeaders.concat(sets.common as RawAxiosHeaders, sets.post as RawAxiosHeaders, own as RawAxiosHeaders);
  headers.setContentType('application/json', false);
  const base = { ...merged, headers } as InternalAxiosRequestConfig;
  const intercepted = (): boolean =>
    [http.interceptors.request.handlers, http.interceptors.response.handlers].some((handlers) => handlers?.some((handler) => handler !== null) === true);
  return async (url, body) => {
    // Interceptors run only inside axios's own pipeline: an instance given some goes that way.
    if (intercepted()) return http.post(url, body, options);
    try {
      const response = await adapter({ ...base, url, data: JSON.stringify(body) });
      response.data = readJson(response.data);
      return response;
    } catch (error) {
      if (error instanceof AxiosError && error.response !== undefined) error.response.data = readJson(error.response.data);
      throw error;
    }
  };
}

/**
 * At most this many connections to one provider host, all of them kept when idle (until the
 * host's keep-alive hint, or 4 s idle, closes them). A burst of sends larger than that (the
 * receipts of a group of callbacks) waits in the pool for a connection (its timeout runs
 * meanwhile) instead of opening connections only to close them again. bench/callbacks.ts at
 * 256 clients: with node:http's agent, which kept at most 256 idle and opened one per waiting
 * request without limit, connecting and closing were about 4% of the app's busy CPU. 256
 * connections at Meta's ~0.2-0.5 s a send carry 500+ sends a second, above the Cloud API's
 * per-number throughput.
 */
export const PROVIDER_MAX_SOCKETS = 256;

export function createProviderHttp(dispatcher: Dispatcher = new Agent({ connections: PROVIDER_MAX_SOCKETS })): AxiosInstance {
  return axios.create({ maxRedirects: 0, adapter: leanAdapter(dispatcher) });
}
