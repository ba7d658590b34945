/**
 * Who is calling, as far as the network says: used by the callback allow-list and as the
 * key of the sign-in failure limiter. Proxy headers are believed only from a proxy.
 */
import type { Context } from 'hono';

const privateNetwork = /^(::ffff:)?(127\.|10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.)|^(::1$|fd|fc)/i;

/**
 * The caller's address: the socket's, or, when the socket is a proxy on a private network, the
 * address that proxy reports. Fly's proxy sets Fly-Client-IP itself; of X-Forwarded-For only the
 * last entry (the one our proxy appended) is believed, never what the client wrote before it.
 */
export function clientAddress(socketAddress: string | undefined, headers: { fly?: string | undefined; forwarded?: string | undefined }): string | undefined {
  if (socketAddress !== undefined && privateNetwork.test(socketAddress)) {
    const forwarded = headers.fly ?? headers.forwarded?.split(',').at(-1);
    if (forwarded !== undefined && forwarded.trim() !== '') return forwarded.trim();
  }
  return socketAddress?.replace(/^::ffff:/, '');
}

/** The address of the request's socket (undefined when the app is called without one, as in app.request). */
export function socketAddress(c: Context): string | undefined {
  return (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming?.socket?.remoteAddress;
}

/** clientAddress() of a Hono request. */
export function requestAddress(c: Context): string | undefined {
  return clientAddress(socketAddress(c), { fly: c.req.header('fly-client-ip'), forwarded: c.req.header('x-forwarded-for') });
}

/**
 * The part of an address that names one client: an IPv4 address whole, an IPv6 address's /64
 * (one host, a home line or a VPS, holds a whole /64: 2^64 addresses to rotate through).
 * Anything that is not an IP address is returned as it is.
 */
export function clientPrefix(address: string): string {
  const plain = address.trim().replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(plain);
  if (mapped !== null) return mapped[1]!;
  if (!plain.includes(':') || !/^[0-9a-f:.]+$/i.test(plain)) return plain;
  const [head = '', tail, ...more] = plain.split('::');
  if (more.length > 0) return plain;
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const missing = 8 - headGroups.length - tailGroups.length;
  if (tail === undefined ? missing !== 0 : missing < 1) return plain;
  const groups = [...headGroups, ...Array.from({ length: missing }, () => '0'), ...tailGroups];
  return `${groups.slice(0, 4).map((g) => (Number.parseInt(g, 16) || 0).toString(16)).join(':')}::/64`;
}
