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
