/** Meta's webhook signature: `X-Hub-Signature-256: sha256=<hex>` over the raw bytes. */
import { createHmac, timingSafeEqual } from 'node:crypto';

export type SignatureCheck = { ok: true } | { ok: false; reason: 'missing' | 'malformed' | 'mismatch' | 'no_secret' };

export function signBody(body: Uint8Array | string, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

export function verifySignature(body: Uint8Array, header: string | undefined, secret: string | undefined): SignatureCheck {
  if (secret === undefined) return { ok: false, reason: 'no_secret' };
  if (header === undefined || header === '') return { ok: false, reason: 'missing' };
  const match = /^sha256=([0-9a-f]{64})$/i.exec(header.trim());
  if (match === null) return { ok: false, reason: 'malformed' };
  const expected = createHmac('sha256', secret).update(body).digest();
  const offered = Buffer.from(match[1]!, 'hex');
  return offered.length === expected.length && timingSafeEqual(offered, expected) ? { ok: true } : { ok: false, reason: 'mismatch' };
}
