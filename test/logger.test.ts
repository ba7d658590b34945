import assert from 'node:assert/strict';
import { test } from 'node:test';
import { maskPhone, maskPhonesInText } from '../src/logger.js';
import { captureLogs, type LogLine } from './helpers/app.js';

const phone = '254712345678';
const masked = '2547****678';

function only(lines: LogLine[]): LogLine {
  assert.equal(lines.length, 1, `expected one line, got ${lines.length}`);
  const [line] = lines;
  assert.ok(line);
  return line;
}

test('lines are JSON with an ISO 8601 timestamp, the level as a word and a message', () => {
  const logs = captureLogs('debug');
  const before = Date.now();
  logs.logger.info({ invoice: 7 }, 'invoice created');
  logs.logger.warn('careful');
  logs.logger.error('broken');
  logs.logger.debug('details');
  const after = Date.now();
  const raw = logs.text().split('\n');
  assert.equal(raw.length, 4);
  for (const text of raw) assert.doesNotThrow(() => JSON.parse(text), text);
  const lines = logs.lines;
  assert.deepEqual(
    lines.map((line) => [line.level, line.message]),
    [
      ['info', 'invoice created'],
      ['warn', 'careful'],
      ['error', 'broken'],
      ['debug', 'details'],
    ],
  );
  for (const line of lines) {
    assert.match(line.timestamp, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    const at = Date.parse(line.timestamp);
    assert.ok(at >= before - 1 && at <= after + 1, 'timestamp is the time of logging');
    assert.equal(line.msg, undefined, 'the message key is `message`');
    assert.equal(line.time, undefined, 'the time key is `timestamp`');
  }
  assert.equal(lines[0]?.invoice, 7);
});

test('the level threshold applies', () => {
  const logs = captureLogs('warn');
  logs.logger.info('hidden');
  logs.logger.debug('hidden too');
  logs.logger.warn('shown');
  assert.deepEqual(
    logs.lines.map((line) => line.message),
    ['shown'],
  );
});

test('maskPhone keeps the last three digits and those before the last eight: five always hidden, the same ones whatever the form', () => {
  assert.equal(maskPhone(phone), masked);
  assert.equal(maskPhone(`+${phone}`), `+${masked}`);
  assert.equal(maskPhone('0712345678'), '07****678');
  assert.equal(maskPhone('712345678'), '7****678');
  assert.equal(maskPhone('12345'), '****');
  assert.equal(maskPhonesInText(`call ${phone} or +254798765432 today`), `call ${masked} or +2547****432 today`);
});

test('ids that merely contain long digit runs are not mangled', () => {
  const id = 'a1b2c3d4-1111-4222-8333-123456789012';
  assert.equal(maskPhonesInText(`invoice ${id}`), `invoice ${id}`);
  assert.equal(maskPhonesInText('INV1234567890X'), 'INV1234567890X');
  const logs = captureLogs();
  logs.logger.child({ correlation_id: id }).info({ invoice_id: id }, `about ${id}`);
  const line = only(logs.lines);
  assert.equal(line.correlation_id, id);
  assert.equal(line.invoice_id, id);
  assert.equal(line.message, `about ${id}`);
});

const secrets = {
  authorization: 'Bearer auth-SECRET-0001',
  'x-hub-signature-256': 'sha256=sig-SECRET-0002',
  token: 'tok-SECRET-0003',
  password: 'pw-SECRET-0004',
  apiKey: 'ak-SECRET-0005',
  passkey: 'pk-SECRET-0006',
  Authorization: 'Basic auth-SECRET-0007',
  cookie: 'session=cookie-SECRET-0008',
  access_token: 'at-SECRET-0009',
  consumerSecret: 'cs-SECRET-0010',
  consumer_key: 'ck-SECRET-0011',
  appSecret: 'as-SECRET-0012',
  'hub.verify_token': 'vt-SECRET-0013',
  verifyToken: 'vt-SECRET-0014',
  clientSecret: 'cl-SECRET-0015',
  api_key: 'ak-SECRET-0016',
  STATS_API_TOKEN: 'st-SECRET-0017',
  SecurityCredential: 'sc-SECRET-0018',
  Password: 'daraja-pw-SECRET-0019',
};

test('secrets are redacted by key at any depth and their values never reach the output', () => {
  const logs = captureLogs();
  logs.logger.info(
    {
      ...secrets,
      request: { headers: { ...secrets } },
      list: [{ nested: { deeper: { ...secrets } } }],
    },
    'outbound call',
  );
  const line = only(logs.lines);
  const text = logs.text();
  for (const [key, value] of Object.entries(secrets)) {
    assert.ok(!text.includes(value), `the value of ${key} leaked`);
    assert.equal(line[key], '[REDACTED]', key);
  }
  assert.ok(!text.includes('SECRET'), 'no secret fragment anywhere');
  const request = line.request as { headers: Record<string, unknown> };
  assert.equal(request.headers.authorization, '[REDACTED]');
  assert.equal(request.headers['x-hub-signature-256'], '[REDACTED]');
  const list = line.list as { nested: { deeper: Record<string, unknown> } }[];
  assert.equal(list[0]?.nested.deeper.passkey, '[REDACTED]');
  assert.equal(line.message, 'outbound call');
});

test('non-secret neighbours of secrets are kept', () => {
  const logs = captureLogs();
  logs.logger.info({ headers: { 'content-type': 'application/json', authorization: 'Bearer x-SECRET' }, token_count: 3, status: 200 }, 'ok');
  const line = only(logs.lines);
  assert.deepEqual(line.headers, { 'content-type': 'application/json', authorization: '[REDACTED]' });
  assert.equal(line.token_count, 3);
  assert.equal(line.status, 200);
});

test('secrets and phones in child logger bindings are scrubbed too', () => {
  const logs = captureLogs();
  const child = logs.logger.child({ correlation_id: 'req-1', phone, token: 'child-SECRET-1' });
  child.child({ msisdn: phone, apiKey: 'grandchild-SECRET-2' }).info('from the grandchild');
  child.info('from the child');
  const text = logs.text();
  assert.ok(!text.includes('SECRET'), text);
  assert.ok(!text.includes(phone), text);
  const [grandchild, first] = logs.lines;
  assert.equal(grandchild?.correlation_id, 'req-1');
  assert.equal(grandchild?.phone, masked);
  assert.equal(grandchild?.msisdn, masked);
  assert.equal(grandchild?.token, '[REDACTED]');
  assert.equal(grandchild?.apiKey, '[REDACTED]');
  assert.equal(grandchild?.message, 'from the grandchild');
  assert.equal(first?.correlation_id, 'req-1');
  assert.equal(first?.msisdn, undefined, "a grandchild's bindings do not leak into its parent");
});

test('phone fields are masked, by key and at any depth, whether strings or numbers', () => {
  const logs = captureLogs();
  logs.logger.info(
    {
      phone,
      msisdn: Number(phone),
      wa_id: phone,
      customer_phone: phone,
      PhoneNumber: phone,
      PartyA: phone,
      to: `+${phone}`,
      message: { from: phone },
      recipients: [{ recipient: phone }],
    },
    'message sent',
  );
  const line = only(logs.lines);
  assert.ok(!logs.text().includes(phone), logs.text());
  assert.equal(line.phone, masked);
  assert.equal(line.msisdn, masked);
  assert.equal(line.wa_id, masked);
  assert.equal(line.customer_phone, masked);
  assert.equal(line.PhoneNumber, masked);
  assert.equal(line.PartyA, masked);
  assert.equal(line.to, `+${masked}`);
  assert.deepEqual(line.recipients, [{ recipient: masked }]);
});

test('phone numbers inside the message text and inside string values are masked', () => {
  const logs = captureLogs();
  logs.logger.info({ note: `customer ${phone} asked for a copy` }, `invoice sent to ${phone} and +254798765432`);
  logs.logger.info('format %s and %o', phone, { phone, detail: `tel ${phone}` });
  const [first, second] = logs.lines;
  assert.equal(first?.message, `invoice sent to ${masked} and +2547****432`);
  assert.equal(first?.note, `customer ${masked} asked for a copy`);
  assert.ok(second?.message.startsWith(`format ${masked} and `), second?.message);
  assert.ok(!logs.text().includes(phone), logs.text());
  assert.ok(!logs.text().includes('254798765432'), logs.text());
});

test('phone numbers as people group them, and Kenyan numbers held as numbers under any key, are masked; other numbers are not', () => {
  assert.equal(maskPhonesInText('call 0712 345 678 or +254-712-345-678 or 254 712 345 678'), 'call 07****678 or +2547****678 or 2547****678');
  assert.equal(maskPhonesInText('on 2026-12-02 at 10:15, 3 000 000 KES'), 'on 2026-12-02 at 10:15, 3 000 000 KES');
  // Grouped other ways (each was logged whole before).
  assert.equal(
    maskPhonesInText('call 07 12 34 56 78, (0712) 345 678, +254 (0) 712 345 678, +254-0712-345-678, 254.712.345.678, 0712.345.678, 0712\u00a0345\u00a0678, 712 345 678 or 2547 1234 5678'),
    'call 07****678, 07****678, +2547****678, +2547****678, 2547****678, 07****678, 07****678, 7****678 or 2547****678',
  );
  // A number right after a phone is not taken into it; ids, dates, times and amounts are left alone.
  assert.equal(maskPhonesInText('invoice 0712 345 678 1500 flour'), 'invoice 07****678 1500 flour');
  const untouched =
    'id e4f1c2d3-0712-4345-8678-123456789012 at 2026-12-02T10:15:00.000Z, 1 500 000 KES, 12.5 ms, ws_CO_191220191020363925, ' +
    'connect ECONNREFUSED 172.16.254.1:5432, 192.168.100.10, took 1234.56789 ms, 0.123456789, 1 500 000.00 KES on 07.12.2026 14:30';
  assert.equal(maskPhonesInText(untouched), untouched);
  // URL-encoded after a plus (a logged URL or form body), and digits of other scripts as people type them.
  assert.equal(maskPhonesInText('POST /send?to=%2B254712345678&text=hi'), 'POST /send?to=%2B2547****678&text=hi');
  assert.equal(maskPhonesInText('to=%2b0712345678'), 'to=%2B07****678');
  assert.equal(maskPhonesInText('namba \u0660\u0667\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668 tafadhali'), 'namba \u0660\u0667****\u0666\u0667\u0668 tafadhali');
  assert.equal(maskPhonesInText('\uff10\uff17\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18'), '\uff10\uff17****\uff16\uff17\uff18');
  // Digits beyond the basic plane (two UTF-16 units each): five still hidden, no character cut in half.
  assert.equal(maskPhonesInText('\u{1d7ce}\u{1d7d5}\u{1d7cf}\u{1d7d0}\u{1d7d1}\u{1d7d2}\u{1d7d3}\u{1d7d4}\u{1d7d5}\u{1d7d6}'), '\u{1d7ce}\u{1d7d5}****\u{1d7d4}\u{1d7d5}\u{1d7d6}');
  // Other text with such digits, and short runs of them, stay as they are.
  assert.equal(maskPhonesInText('bei \u0661\u0665\u0660\u0660 KES, %2B1234'), 'bei \u0661\u0665\u0660\u0660 KES, %2B1234');
  const logs = captureLogs();
  // Daraja's callback items carry the payer's number as a number, under Value.
  logs.logger.info({ items: [{ Name: 'PhoneNumber', Value: 254712345678 }], at: 1796206273741, phone_number_id: 109876543210987, amount: 1500 }, 'callback');
  const line = only(logs.lines) as LogLine & { items: Array<{ Value: unknown }>; at: unknown; phone_number_id: unknown; amount: unknown };
  assert.equal(line.items[0]!.Value, masked);
  assert.deepEqual([line.at, line.phone_number_id, line.amount], [1796206273741, 109876543210987, 1500]);
  assert.ok(!logs.text().includes(phone), logs.text());
});

test('errors are serialised with phones masked in their message and stack, in every logging form', () => {
  const logs = captureLogs();
  const make = (n: number) => new Error(`delivery ${n} to ${phone} failed`);
  logs.logger.error({ error: make(1) }, 'send failed');
  logs.logger.error({ err: make(2) }, 'send failed');
  logs.logger.error(make(3), 'send failed');
  logs.logger.error(make(4));
  logs.logger.warn({ context: { cause: make(5) } }, 'nested');
  const text = logs.text();
  assert.ok(!text.includes(phone), text);
  const lines = logs.lines;
  assert.equal(lines.length, 5);
  const first = lines[0]?.error as { type: string; message: string; stack: string };
  assert.equal(first.type, 'Error');
  assert.equal(first.message, `delivery 1 to ${masked} failed`);
  assert.match(first.stack, /delivery 1 to 2547\*\*\*\*678 failed/);
  assert.equal((lines[1]?.err as { message: string }).message, `delivery 2 to ${masked} failed`);
  assert.equal((lines[2]?.error as { message: string }).message, `delivery 3 to ${masked} failed`);
  assert.equal(lines[2]?.message, 'send failed');
  assert.equal(lines[3]?.message, `delivery 4 to ${masked} failed`);
  assert.equal((lines[3]?.error as { message: string }).message, `delivery 4 to ${masked} failed`);
  const nested = lines[4]?.context as { cause: { message: string } };
  assert.equal(nested.cause.message, `delivery 5 to ${masked} failed`);
});
