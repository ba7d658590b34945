/**
 * The two primitives every credential check here uses: a SHA-256 hex digest (stored instead
 * of tokens, and as dedupe keys) and a constant-time comparison of secrets.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

export function sha256Hex(value: string | Uint8Array): string {
  return createHash('sha256').update(value).digest('hex');
}

/** The token of an `Authorization: Bearer <token>` header, or undefined for any other header (or none). */
export function bearerToken(header: string | undefined): string | undefined {
  return header === undefined ? undefined : /^Bearer\s+(.+)$/i.exec(header.trim())?.[1];
}

/** Constant time whatever the lengths (both sides are hashed first). */
export function sameSecret(offered: string, expected: string): boolean {
  return timingSafeEqual(createHash('sha256').update(offered).digest(), createHash('sha256').update(expected).digest());
}
