/**
 * Static files a page loads (its script, its style, a library's browser build), from an
 * explicit allow-list: nothing else is ever read from disk. Read and gzipped once per
 * process on first use, served with a content hash in the URL, cached for a year.
 */
import { readFileSync, statSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import type { Context } from 'hono';
import { sha256Hex } from '../security.js';
import type { AppEnv } from './middleware.js';

/** A page's CSP: same-origin everything, no inline script or style, no framing. */
export function pageCsp(formAction: "'self'" | "'none'"): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    `form-action ${formAction}`,
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

export const JS = 'text/javascript; charset=utf-8';
export const CSS = 'text/css; charset=utf-8';

export type AssetEntry = { path: () => string; contentType: string };
type Asset = { body: Uint8Array<ArrayBuffer>; gzip: Uint8Array<ArrayBuffer>; contentType: string; version: string };

export type AssetStore = {
  /** `${prefix}${name}?v=<hash>` for a page to link. */
  url(name: string): string;
  /** Answers `GET ${prefix}:name`. */
  serve(c: Context<AppEnv>, name: string): Response;
};

export function createAssetStore(prefix: string, allowList: Readonly<Record<string, AssetEntry>>): AssetStore {
  // A missing file still stops start-up (a cheap check); reading and gzipping wait for the first request.
  for (const entry of Object.values(allowList)) statSync(entry.path());
  let loaded: ReadonlyMap<string, Asset> | undefined;
  const load = (): ReadonlyMap<string, Asset> => {
    if (loaded !== undefined) return loaded;
    const assets = new Map<string, Asset>();
    for (const [name, entry] of Object.entries(allowList)) {
      const body = new Uint8Array(readFileSync(entry.path()));
      assets.set(name, { body, gzip: new Uint8Array(gzipSync(body, { level: 9 })), contentType: entry.contentType, version: sha256Hex(body).slice(0, 16) });
    }
    loaded = assets;
    return assets;
  };
  return {
    url: (name) => `${prefix}${name}?v=${load().get(name)!.version}`,
    serve(c, name) {
      const asset = Object.hasOwn(allowList, name) ? load().get(name) : undefined;
      if (asset === undefined) return c.notFound() as Response;
      c.header('Cache-Control', 'public, max-age=31536000, immutable');
      c.header('ETag', `"${asset.version}"`);
      c.header('Vary', 'Accept-Encoding');
      c.header('Content-Type', asset.contentType);
      if (c.req.header('if-none-match') === `"${asset.version}"`) return c.body(null, 304);
      if (/\bgzip\b/i.test(c.req.header('accept-encoding') ?? '')) {
        c.header('Content-Encoding', 'gzip');
        return c.body(asset.gzip);
      }
      return c.body(asset.body);
    },
  };
}
