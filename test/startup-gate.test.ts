/**
 * The server listens before the job queues exist (a faster cold start). A webhook that
 * arrives in that moment waits for the queues instead of failing or losing its replies.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { APP_SECRET, inboundText, signed } from './fixtures/whatsapp.js';
import { buildTestApp, type TestApp } from './helpers/app.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';

let database: TestDatabase;
let t: TestApp;
before(async () => {
  database = await createTestDatabase();
  t = buildTestApp(database, { env: { WABA_APP_SECRET: APP_SECRET, DELIVERY_SAFETY_NET_SECONDS: '3600' } });
});
after(async () => {
  await t.deps.outbox.idle();
  await t.deps.jobs.stop(2_000);
  await database.dispose();
});

test('a webhook before the queues exist waits for them, then commits its event and reply', async () => {
  const s = signed(inboundText('254711000001', 'hello'));
  let settled = false;
  const pending = Promise.resolve(t.app.request('/whatsapp/webhook', { method: 'POST', body: s.body, headers: s.headers })).finally(() => {
    settled = true;
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(settled, false, 'waits while the queues are not ready');
  assert.equal((await database.handle.db.selectFrom('inbound_events').select('id').execute()).length, 0);
  await t.deps.jobs.start(t.deps.jobDefinitions);
  const res = await pending;
  assert.equal(res.status, 200);
  const rows = await database.handle.db.selectFrom('outbound_messages').select('recipient').execute();
  assert.deepEqual(rows.map((r) => r.recipient), ['254711000001']);
});
