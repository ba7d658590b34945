/**
 * Who is calling, as far as the network says: used by the callback allow-list and as the
 * key of the sign-in failure limiter. Proxy headers are believed only from a proxy.
 */
import type { Context } from 'hono';
import { BlockList, isIP } from 'node:net';

/** The proxies believed when no TRUSTED_PROXIES is set: any private network (Fly's proxy among them). */
export const PRIVATE_NETWORKS = ['127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '::1/128', 'fc00::/7'] as const;

/** An address or a network (`address/prefix`) as TRUSTED_PROXIES takes it; undefined when it is neither. */
export function parseNetwork(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const [address = '', prefixText, ...rest] = text.trim().split('/');
  const version = isIP(address);
  if (version === 0 || rest.length > 0) return undefined;
  const most = version === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = prefixText === undefined ? most : Number(prefixText);
  if (prefix > most) return undefined;
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}

/** Whether a socket address is one of `networks` (IPv4-mapped IPv6 addresses count as their IPv4). */
export type ProxyTrust = (socketAddress: string) => boolean;

export function proxyTrust(networks: readonly string[]): ProxyTrust {
  const list = new BlockList();
  for (const text of networks) {
    const network = parseNetwork(text);
    if (network === undefined) throw new RangeError(`not an address or a network: ${text}`);
    list.addSubnet(network.address, network.prefix, network.family);
  }
  return (address) => {
    const plain = address.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
    const version = isIP(plain);
    return version !== 0 && list.check(plain, version === 4 ? 'ipv4' : 'ipv6');
  };
}

const privateNetwork = proxyTrust(PRIVATE_NETWORKS);

/**
 * The caller's address: the socket's, or, when the socket is a trusted proxy (TRUSTED_PROXIES;
 * by default any private network), the address that proxy reports. On Fly (`onFly`) Fly's
 * proxy sets Fly-Client-IP itself; anywhere else that header is only what the client sent
 * (a proxy that appends to X-Forwarded-For passes it on), so it is not read. Of
 * X-Forwarded-For only the last entry (the one our proxy appended) is believed, never what
 * the client wrote before it.
 */
export function clientAddress(
  socketAddress: string | undefined,
  headers: { fly?: string | undefined; forwarded?: string | undefined },
  trusted: ProxyTrust = privateNetwork,
  onFly = true,
): string | undefined {
  if (socketAddress !== undefined && trusted(socketAddress)) {
    const forwarded = (onFly ? headers.fly : undefined) ?? headers.forwarded?.split(',').at(-1);
    if (forwarded !== undefined && forwarded.trim() !== '') return forwarded.trim();
  }
  return socketAddress?.replace(/^::ffff:/, '');
}

/** The address of the request's socket (undefined when the app is called without one, as in app.request). */
export function socketAddress(c: Context): string | undefined {
  return (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming?.socket?.remoteAddress;
}

/** clientAddress() of a Hono request, with the proxies the app was configured to trust (middleware.ts). */
export function requestAddress(c: Context): string | undefined {
  const { proxyTrust: trusted, onFly } = c.var as { proxyTrust?: ProxyTrust; onFly?: boolean };
  return clientAddress(socketAddress(c), { fly: c.req.header('fly-client-ip'), forwarded: c.req.header('x-forwarded-for') }, trusted, onFly ?? true);
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
