/**
 * The simulator's page and browser API (contract: src/simulator/contract.ts). Mounted only
 * in simulator mode: with provider credentials set these routes do not exist (404).
 *
 * - `GET /simulator`: the two phones (the page builds itself from simulator.js).
 * - `GET /simulator/assets/:name`: its script and style.
 * - `/simulator/api/*`: state, typing and tapping on a phone, answering the M-PESA prompt,
 *   switches, reconcile now, reset.
 *
 * The page holds only simulated data, and only exists in development without accounts.
 */
import { fileURLToPath } from 'node:url';
import { Hono, type Context } from 'hono';
import { html } from 'hono/html';
import type { z } from 'zod';
import type { Deps } from '../deps.js';
import { PromptAction, SendRequest, Switches, Who } from '../simulator/contract.js';
import type { Simulator } from '../simulator/index.js';
import { createAssetStore, CSS, JS, pageCsp } from './assets.js';
import { ApiError } from './errors.js';
import type { AppEnv } from './middleware.js';

const OWN_ASSETS = new URL('./simulator/assets/', import.meta.url);

const PAGE_CSP = pageCsp("'none'");

/** Parses a JSON body with a schema; a bad body is a 400 naming the problem. */
async function body<T>(c: Context<AppEnv>, schema: z.ZodType<T>): Promise<T> {
  let raw: unknown;
  try {
    raw = await c.req.json();
  } catch {
    throw new ApiError(400, 'malformed_json', 'The request body is not valid JSON.');
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ApiError(400, 'invalid_request', `${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}

export function simulatorRoutes(deps: Pick<Deps, 'database' | 'payments'>, simulator: Simulator): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  const { sandbox } = simulator;
  const assets = createAssetStore('/simulator/assets/', {
    'simulator.js': { path: () => fileURLToPath(new URL('simulator.js', OWN_ASSETS)), contentType: JS },
    'simulator.css': { path: () => fileURLToPath(new URL('simulator.css', OWN_ASSETS)), contentType: CSS },
  });

  routes.get('/simulator', (c) => {
    c.header('Cache-Control', 'no-store');
    c.header('Content-Security-Policy', PAGE_CSP);
    return c.html(html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<meta name="theme-color" content="#075e54">
<title>Simulator · InvoiceIQ</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${assets.url('simulator.css')}">
<script defer src="${assets.url('simulator.js')}"></script>
</head>
<body class="sim">
<main id="app"></main>
<noscript>This page needs JavaScript.</noscript>
</body>
</html>
`);
  });
  routes.get('/simulator/', (c) => c.redirect('/simulator', 301));
  routes.get('/simulator/assets/:name', (c) => assets.serve(c, c.req.param('name')));

  // The API changes things (and reset deletes rows): only JSON, and never from another site,
  // so no other page open in the browser can drive it (a form or a text/plain fetch cannot).
  routes.use('/simulator/api/*', async (c, next) => {
    if (c.req.header('sec-fetch-site') === 'cross-site') throw new ApiError(403, 'forbidden', 'The simulator is driven from its own page only.');
    if (c.req.method !== 'GET' && !/^application\/json\b/i.test(c.req.header('content-type') ?? '')) {
      throw new ApiError(415, 'unsupported_media_type', 'Send JSON (Content-Type: application/json).');
    }
    await next();
  });

  routes.get('/simulator/api/state', (c) => {
    c.header('Cache-Control', 'no-store');
    return c.json(sandbox.state());
  });

  routes.post('/simulator/api/phones/:who/send', async (c) => {
    const who = Who.safeParse(c.req.param('who'));
    if (!who.success) throw new ApiError(404, 'not_found', 'There is no such phone.');
    const request = await body(c, SendRequest);
    if (!(await sandbox.send(who.data, request))) throw new ApiError(502, 'webhook_refused', 'The bot did not accept the message; see the server log.');
    return c.json({ ok: true });
  });

  routes.post('/simulator/api/prompts/:checkoutRequestId', async (c) => {
    const action = await body(c, PromptAction);
    const state = await sandbox.answerPrompt(c.req.param('checkoutRequestId'), action);
    if (state === undefined) throw new ApiError(404, 'not_found', 'There is no such M-PESA prompt.');
    return c.json({ state });
  });

  routes.put('/simulator/api/switches', async (c) => {
    const change = await body(c, Switches.partial().strict());
    return c.json(await simulator.setSwitches(deps.database.db, change));
  });

  routes.post('/simulator/api/reconcile', async (c) => c.json(await deps.payments.reconcile({ olderThanMs: 0, askAgainNow: true })));

  routes.post('/simulator/api/reset', async (c) => {
    await simulator.reset(deps.database.db);
    return c.json({ ok: true });
  });

  return routes;
}
