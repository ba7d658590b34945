/**
 * Safaricom Daraja (M-PESA Express / STK push) payloads: the answers to what we send and the
 * callback Safaricom posts to us. The single source of truth for their shapes. Unknown fields
 * pass through (Safaricom adds fields over time).
 */
import { z } from 'zod';

/** Digits only, as a string ("3599", "0", "1032"). */
const digitString = z.string().regex(/^\d+$/, 'digits as a string');

/**
 * `GET /oauth/v1/generate?grant_type=client_credentials`. `expires_in` is documented as a
 * string of seconds ("3599"); a plain number is accepted too. Either way it comes out a number.
 */
export const OAuthResponse = z.looseObject({
  access_token: z.string().min(1),
  expires_in: z.union([digitString, z.number().int().nonnegative()]).transform((value) => Number(value)),
});
export type OAuthResponse = z.infer<typeof OAuthResponse>;

/**
 * `POST /mpesa/stkpush/v1/processrequest` answered 200. ResponseCode "0" only means
 * "accepted for processing"; the client treats any other code as a refusal.
 */
export const StkPushResponse = z.looseObject({
  MerchantRequestID: z.string().min(1),
  CheckoutRequestID: z.string().min(1),
  ResponseCode: z.string(),
  ResponseDescription: z.string(),
  CustomerMessage: z.string(),
});
export type StkPushResponse = z.infer<typeof StkPushResponse>;

/** Just the verdict of a 200 answer (push or query), read before the rest: a refusal may lack the IDs. */
export const ResponseVerdict = z.looseObject({
  ResponseCode: z.string(),
  ResponseDescription: z.string().optional(),
});

/** Daraja's error body (any endpoint): `{requestId, errorCode:"400.002.02", errorMessage}`. */
export const DarajaErrorBody = z.looseObject({
  requestId: z.string().optional(),
  errorCode: z.string().min(1),
  errorMessage: z.string().optional(),
});
export type DarajaErrorBody = z.infer<typeof DarajaErrorBody>;

/**
 * `POST /mpesa/stkpushquery/v1/query` answered 200. ResultCode is a string here ("0", "1032");
 * a number is accepted too; it comes out a number.
 */
export const StkQueryResponse = z.looseObject({
  ResponseCode: z.string(),
  ResponseDescription: z.string(),
  MerchantRequestID: z.string(),
  CheckoutRequestID: z.string(),
  ResultCode: z.union([digitString, z.number().int().nonnegative()]).transform((value) => Number(value)),
  ResultDesc: z.string(),
});
export type StkQueryResponse = z.infer<typeof StkQueryResponse>;

/** One `CallbackMetadata.Item`: `{Name, Value?}`; Balance comes without a Value. */
export const CallbackItem = z.looseObject({
  Name: z.string(),
  Value: z.union([z.number(), z.string()]).nullable().optional(),
});
export type CallbackItem = z.infer<typeof CallbackItem>;

/**
 * The callback POSTed to CallBackURL. ResultCode is a number (a numeric string is tolerated).
 * CallbackMetadata only comes on success; its items come in any order and any may be missing.
 */
export const StkCallback = z.looseObject({
  Body: z.looseObject({
    stkCallback: z.looseObject({
      MerchantRequestID: z.string().min(1),
      CheckoutRequestID: z.string().min(1),
      ResultCode: z.union([z.number().int(), z.string().regex(/^-?\d+$/).transform((value) => Number(value))]),
      ResultDesc: z.string(),
      CallbackMetadata: z.looseObject({ Item: z.array(CallbackItem) }).optional(),
    }),
  }),
});
export type StkCallback = z.infer<typeof StkCallback>;

export type StkCallbackResult = {
  merchantRequestId: string;
  checkoutRequestId: string;
  resultCode: number;
  resultDesc: string;
  amount: number | null;
  receipt: string | null;
  /** '2547XXXXXXXX' as a string (Safaricom sends a number). */
  phone: string | null;
  /** 'YYYYMMDDHHmmss' (Nairobi time) as a string (Safaricom sends a number). */
  transactionDate: string | null;
};

function itemValue(items: readonly CallbackItem[], name: string): number | string | null {
  const item = items.find((candidate) => candidate.Name === name);
  return item?.Value ?? null;
}

function asAmount(value: number | string | null): number | null {
  if (value === null) return null;
  const amount = typeof value === 'number' ? value : value.trim() === '' ? Number.NaN : Number(value);
  return Number.isFinite(amount) ? amount : null;
}

function asText(value: number | string | null): string | null {
  if (value === null) return null;
  if (typeof value === 'number') return Number.isSafeInteger(value) ? String(value) : null;
  const text = value.trim();
  return text === '' ? null : text;
}

/** Parses a callback body (already JSON-parsed). Never throws; never echoes the payload. */
export function parseStkCallback(body: unknown): { ok: true; value: StkCallbackResult } | { ok: false; error: string } {
  const parsed = StkCallback.safeParse(body);
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 3).map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`);
    return { ok: false, error: `not an STK callback: ${issues.join('; ')}` };
  }
  const callback = parsed.data.Body.stkCallback;
  const items = callback.CallbackMetadata?.Item ?? [];
  return {
    ok: true,
    value: {
      merchantRequestId: callback.MerchantRequestID,
      checkoutRequestId: callback.CheckoutRequestID,
      resultCode: callback.ResultCode,
      resultDesc: callback.ResultDesc,
      amount: asAmount(itemValue(items, 'Amount')),
      receipt: asText(itemValue(items, 'MpesaReceiptNumber')),
      phone: asText(itemValue(items, 'PhoneNumber')),
      transactionDate: asText(itemValue(items, 'TransactionDate')),
    },
  };
}
