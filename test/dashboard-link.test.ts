/**
 * `dashboard` on WhatsApp: a personal sign-in link (single use, 15 minutes, stored hashed).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Hono } from 'hono';
import { envelope, wamid } from './fixtures/whatsapp.js';
import { startChannelFixture, type ChannelFixture } from './helpers/channel.js';

const MERCHANT = '254712999001';
let clock = Date.parse('2026-11-22T07:00:00Z');
let f: ChannelFixture;
before(async () => {
  f = await startChannelFixture({ now: () => new Date(clock), env: { PUBLIC_BASE_URL: 'https://invoiceiq.example/', DELIVERY_SAFETY_NET_SECONDS: '3600' } });
});
after(() => f.close());

const say = (body: string) => f.post(envelope({ messages: [{ from: MERCHANT, id: wamid(), timestamp: String(Math.floor(clock / 1000)), type: 'text', text: { body } }] }));

async function lastBody(): Promise<string> {
  const row = await f.database.handle.db.selectFrom('outbound_messages').select('content').where('recipient', '=', MERCHANT).orderBy('created_at', 'desc').limit(1).executeTakeFirstOrThrow();
  return (row.content as { message: { body: string } }).message.body;
}

test('a merchant gets a personal link that works once and expires after 15 minutes', async () => {
  await say('hi');
  await say('Duka Dash');
  await say('dashboard');
  const body = await lastBody();
  const match = /https:\/\/invoiceiq\.example\/dashboard\/login\?link=([A-Za-z0-9_-]+)/.exec(body);
  assert.ok(match, body);
  const token = match[1]!;
  const stored = await f.database.handle.db.selectFrom('dashboard_links').selectAll().execute();
  assert.equal(stored.length, 1);
  assert.equal(stored[0]!.token_hash, createHash('sha256').update(token).digest('hex'), 'only the hash is stored');
  assert.ok(!JSON.stringify(stored).includes(token));

  const signIn = new Hono();
  signIn.get('/in/:token', async (c) => ((await f.deps.auth.signInWithLink(c, c.req.param('token'))) ? c.text('ok') : c.text('no', 401)));
  assert.equal((await signIn.request(`/in/${token}`)).status, 200);
  assert.equal((await signIn.request(`/in/${token}`)).status, 401, 'single use');

  await say('dashboard');
  const second = /link=([A-Za-z0-9_-]+)/.exec(await lastBody())![1]!;
  clock += 16 * 60_000;
  assert.equal((await signIn.request(`/in/${second}`)).status, 401, 'expired after 15 minutes');
});

test('without PUBLIC_BASE_URL the bot says the dashboard is not set up', async () => {
  const g = await startChannelFixture({ env: { DELIVERY_SAFETY_NET_SECONDS: '3600' } });
  try {
    const from = '254712999002';
    const post = (text: string) => g.post(envelope({ messages: [{ from, id: wamid(), timestamp: String(Math.floor(Date.now() / 1000)), type: 'text', text: { body: text } }] }));
    await post('hi');
    await post('Shop Two');
    await post('dashboard');
    const row = await g.database.handle.db.selectFrom('outbound_messages').select('content').where('recipient', '=', from).orderBy('created_at', 'desc').limit(1).executeTakeFirstOrThrow();
    assert.match((row.content as { message: { body: string } }).message.body, /isn't set up/);
    assert.equal((await g.database.handle.db.selectFrom('dashboard_links').select('token_hash').execute()).length, 0);
  } finally {
    await g.close();
  }
});
