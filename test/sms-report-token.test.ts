/**
 * SMS delivery reports behind a secret URL (SMS_REPORT_TOKEN): Africa's Talking does not sign
 * its reports, so with the token set only `/sms/delivery-report/<token>` takes them; the bare
 * route and any other token are answered 404 as if there were no such route, nothing is read
 * or kept, and the token never reaches the logs. Without the token (the default) the bare route
 * takes reports as before (test/delivery.test.ts) and a token path is no route. Real route,
 * both databases.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { randomUUID } from 'node:crypto';
import { loggablePath } from '../src/http/middleware.js';
import { startChannelFixture, type ChannelFixture } from './helpers/channel.js';

const REPORT_TOKEN = 'report-secret-0123456789abcdefABCDEF';

let guarded: ChannelFixture;
let open: ChannelFixture;
before(async () => {
  guarded = await startChannelFixture({ env: { SMS_REPORT_TOKEN: REPORT_TOKEN } });
  open = await startChannelFixture({});
});
after(async () => {
  await guarded.close();
  await open.close();
});

let seq = 0;
/** An SMS of ours, recorded sent under a fresh Africa's Talking id. */
async function sentSms(f: ChannelFixture): Promise<{ id: string; smsId: string }> {
  seq += 1;
  const id = randomUUID();
  const smsId = `ATXid_token_${seq}`;
  await f.database.handle.db
    .insertInto('outbound_messages')
    .values({ id, recipient: `2547024${String(seq).padStart(5, '0')}`, kind: 'notice', content: JSON.stringify({ message: { type: 'text', body: 'hi' } }), status: 'sent', channel: 'sms', sms_message_id: smsId })
    .execute();
  return { id, smsId };
}
const report = (f: ChannelFixture, path: string, smsId: string) =>
  f.app.request(path, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ id: smsId, status: 'Success' }).toString() });
const statusOf = async (f: ChannelFixture, id: string) => (await f.database.handle.db.selectFrom('outbound_messages').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status;
const keptFor = (f: ChannelFixture, smsId: string) => f.database.handle.db.selectFrom('inbound_events').select('id').where('source', '=', 'sms_report').where('external_key', '=', `${smsId}:Success`).execute();

describe('with SMS_REPORT_TOKEN set', () => {
  test('the secret URL takes a report: applied once', async () => {
    const sms = await sentSms(guarded);
    const res = await report(guarded, `/sms/delivery-report/${REPORT_TOKEN}`, sms.smsId);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'processed' });
    assert.equal(await statusOf(guarded, sms.id), 'delivered');
  });

  test('the bare route and any other token: 404 as for no route, nothing applied or kept, counted as forged, and the token never logged', async () => {
    const sms = await sentSms(guarded);
    const metric = async () => Number(/invoiceiq_inbound_events_total\{source="sms_report",outcome="forged"\} (\d+)/.exec(await guarded.deps.metrics.registry.metrics())?.[1] ?? 0);
    const before = await metric();
    for (const path of ['/sms/delivery-report', `/sms/delivery-report/${REPORT_TOKEN}x`, '/sms/delivery-report/guess-0123456789abcdefghijklmnop']) {
      const res = await report(guarded, path, sms.smsId);
      assert.equal(res.status, 404, path);
    }
    assert.equal(await statusOf(guarded, sms.id), 'sent');
    assert.deepEqual(await keptFor(guarded, sms.smsId), []);
    assert.equal(await metric(), before + 3);
    assert.deepEqual(guarded.logs.lines.filter((line) => JSON.stringify(line).includes(REPORT_TOKEN)), [], 'the secret reached the logs');
  });

  test('a path that no route matches (a doubled slash) is logged with its secret masked', () => {
    assert.deepEqual(loggablePath('', `//sms/delivery-report/${REPORT_TOKEN}`), { path: '//sms/delivery-report/…' });
  });
});

describe('without SMS_REPORT_TOKEN (the default)', () => {
  test('the bare route takes reports; a token path is no route', async () => {
    const sms = await sentSms(open);
    assert.equal((await report(open, `/sms/delivery-report/${REPORT_TOKEN}`, sms.smsId)).status, 404);
    assert.equal(await statusOf(open, sms.id), 'sent');
    const res = await report(open, '/sms/delivery-report', sms.smsId);
    assert.deepEqual([res.status, await res.json()], [200, { status: 'processed' }]);
    assert.equal(await statusOf(open, sms.id), 'delivered');
  });
});
