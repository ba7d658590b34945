/**
 * The two ways a provider call fails (grammY's split): the API answered and said no
 * (ProviderError: HTTP status, provider code, retry-after), or no answer came at all
 * (TransportError: timeout, refused, reset). Each says whether trying again can help.
 */
export class ProviderError extends Error {
  readonly provider: string;
  readonly httpStatus: number | undefined;
  readonly code: string | undefined;
  readonly retryable: boolean;
  readonly retryAfterSeconds: number | undefined;
  constructor(options: {
    provider: string;
    message: string;
    httpStatus?: number;
    code?: string;
    retryable: boolean;
    retryAfterSeconds?: number;
  }) {
    super(options.message);
    this.name = 'ProviderError';
    this.provider = options.provider;
    this.httpStatus = options.httpStatus;
    this.code = options.code;
    this.retryable = options.retryable;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

export class TransportError extends Error {
  readonly provider: string;
  readonly reason: 'timeout' | 'network' | 'not_configured';
  readonly retryable: boolean;
  constructor(options: { provider: string; message: string; reason: TransportError['reason'] }) {
    super(options.message);
    this.name = 'TransportError';
    this.provider = options.provider;
    this.reason = options.reason;
    this.retryable = options.reason !== 'not_configured';
  }
}

export type DeliveryError = ProviderError | TransportError;

export function isDeliveryError(error: unknown): error is DeliveryError {
  return error instanceof ProviderError || error instanceof TransportError;
}

/** A short, log- and database-safe description: no payloads, no numbers. */
export function describeDeliveryError(error: DeliveryError): string {
  if (error instanceof TransportError) return `${error.provider} ${error.reason}: ${error.message}`.slice(0, 300);
  return `${error.provider} ${error.httpStatus ?? ''} ${error.code ?? ''}: ${error.message}`.replace(/\s+/g, ' ').slice(0, 300);
}
