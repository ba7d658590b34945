/**
 * Errors as the API shows them: `{ code, message, requestId }`, never a stack trace.
 * Handlers throw ApiError (or let zod/body parsing throw through the helpers here);
 * app.onError maps everything else to a 500 whose details stay in the logs.
 */
import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { z } from 'zod';

export class ApiError extends Error {
  readonly status: ContentfulStatusCode;
  readonly code: string;
  constructor(status: ContentfulStatusCode, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

export type ErrorBody = { code: string; message: string; requestId: string };

export function errorBody(c: Context, code: string, message: string): ErrorBody {
  return { code, message, requestId: c.get('requestId') ?? 'unknown' };
}

/** Short, client-safe summary of a zod error: `field: problem; other: problem`. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((issue) => `${issue.path.length > 0 ? issue.path.join('.') : 'body'}: ${issue.message}`)
    .join('; ');
}

/**
 * Reads a JSON body and parses it with `schema`.
 * 415 when the content type is not JSON, 400 when the bytes are not JSON,
 * 422 when the JSON does not match the schema.
 */
export async function parseJsonBody<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  const contentType = c.req.header('content-type') ?? '';
  if (!/^application\/([\w.+-]+\+)?json\b/i.test(contentType)) {
    throw new ApiError(415, 'unsupported_media_type', 'Send the body as application/json.');
  }
  let raw: unknown;
  try {
    raw = JSON.parse(await c.req.text());
  } catch {
    throw new ApiError(400, 'malformed_json', 'The request body is not valid JSON.');
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new ApiError(422, 'invalid_body', describeIssues(parsed.error));
  return parsed.data;
}
