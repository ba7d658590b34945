/**
 * The provider HTTP client (src/providers/http.ts) over real HTTP on 127.0.0.1: connections
 * are reused, TCP keep-alive is armed once per socket rather than once per request, the
 * server's Keep-Alive timeout hint is still honoured, and redirects are not followed. The
 * request goes through src/providers/http.ts's own adapter over undici's connection pool:
 * query parameters, error answers
 * with their parsed body, a deadline for the whole call, a cap on the answer's size, and TLS
 * with certificate checks (a self-signed test certificate in test/fixtures).
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createDarajaClient } from '../src/providers/mpesa/client.js';
import { createWhatsAppClient } from '../src/providers/whatsapp/client.js';
import { Agent as HttpAgent } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import { Socket, type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import axios from 'axios';
import { Agent as UndiciAgent } from 'undici';
import { MAX_RESPONSE_BYTES, PROVIDER_MAX_SOCKETS, createProviderHttp, leanAdapter, preparedJsonPost } from '../src/providers/http.js';

let server: Server;
let base: string;
let connections = 0;
let answer: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end('{"ok":true}');
};
before(async () => {
  server = createServer((req, res) => {
    req.resume();
    req.on('end', () => answer(req, res));
  });
  server.on('connection', () => {
    connections += 1;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

/**
 * How often TCP keep-alive settings actually change while `run` runs: Node skips a call that
 * repeats a socket's current settings, and each change is several setsockopt system calls.
 * (axios sets a 60 s keep-alive on every request's socket, Node's agent 1 s on every release.)
 */
async function keepAliveChanges(run: () => Promise<void>): Promise<number> {
  const original = Socket.prototype.setKeepAlive;
  const current = new WeakMap<Socket, string>();
  let changes = 0;
  Socket.prototype.setKeepAlive = function (this: Socket, ...args: Parameters<Socket['setKeepAlive']>) {
    const setting = JSON.stringify(args);
    if (current.get(this) !== setting) changes += 1;
    current.set(this, setting);
    return original.apply(this, args);
  };
  try {
    await run();
  } finally {
    Socket.prototype.setKeepAlive = original;
  }
  return changes;
}

describe('provider HTTP client', () => {
  test('twenty sequential calls: the connections are reused, keep-alive set a few times in all (a plain agent changes it twice per call)', async () => {
    const before = connections;
    const http = createProviderHttp();
    const ours = await keepAliveChanges(async () => {
      for (let i = 0; i < 20; i += 1) assert.equal((await http.post(`${base}/send`, { i }, { timeout: 2000 })).status, 200);
    });
    // A call made as the previous one's answer resolves can find that connection not yet counted
    // free by the pool, and open a second one; from then on the two are reused.
    assert.ok(connections - before <= 2, `the connections are reused: ${connections - before} opened for 20 calls`);
    assert.ok(ours <= 3, `keep-alive changed ${ours} times`);

    const plainAgent = new HttpAgent({ keepAlive: true });
    const plain = axios.create({ maxRedirects: 0, httpAgent: plainAgent });
    const theirs = await keepAliveChanges(async () => {
      for (let i = 0; i < 20; i += 1) await plain.post(`${base}/send`, { i }, { timeout: 2000 });
    });
    plainAgent.destroy();
    assert.ok(theirs >= 39, `with Node's own agent it changed ${theirs} times`);
  });

  test(`bursts of 300 calls at once: at most ${PROVIDER_MAX_SOCKETS} connections, all kept, and the second burst opens none (was a defect)`, async () => {
    // Every call is answered only once all of its burst has arrived (or after a second), so
    // the whole burst is in flight together.
    let open = 0;
    let most = 0;
    let waiting: Array<() => void> = [];
    const burst = 300;
    answer = (_req, res) => {
      open += 1;
      most = Math.max(most, open);
      const reply = (): void => {
        open -= 1;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      };
      waiting.push(reply);
      const release = (): void => {
        const now = waiting;
        waiting = [];
        for (const go of now) go();
      };
      // The agent holds back what it cannot send: release what has arrived shortly after the last arrival.
      if (waiting.length === 1) setTimeout(release, 100);
    };
    const http = createProviderHttp();
    try {
      const before = connections;
      const sendBurst = () => Promise.all(Array.from({ length: burst }, (_, i) => http.post(`${base}/send`, { i }, { timeout: 5000 })));
      assert.equal((await sendBurst()).length, burst);
      const first = connections - before;
      assert.ok(most <= PROVIDER_MAX_SOCKETS, `${most} calls were open at once`);
      assert.equal(first, PROVIDER_MAX_SOCKETS, `the first burst opened ${first} connections`);
      assert.equal((await sendBurst()).length, burst);
      // Node's own agent closed every connection above its 256 idle ones, and opened them again.
      assert.equal(connections - before, first, 'the second burst reused the first burst\'s connections');
    } finally {
      answer = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      };
    }
  });

  test(`a call waiting for one of the ${PROVIDER_MAX_SOCKETS} connections times out like any other, and the connections stay usable`, async () => {
    const held: Array<() => void> = [];
    answer = (req, res) => {
      const reply = (): void => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      };
      if (req.url === '/slow') held.push(reply);
      else reply();
    };
    const http = createProviderHttp();
    try {
      const slow = Array.from({ length: PROVIDER_MAX_SOCKETS }, () => http.post(`${base}/slow`, {}, { timeout: 10_000 }));
      while (held.length < PROVIDER_MAX_SOCKETS) await new Promise((resolve) => setTimeout(resolve, 10));
      // Every connection is taken: this one waits in the agent, and its deadline still holds.
      const started = performance.now();
      await assert.rejects(http.post(`${base}/fast`, {}, { timeout: 200 }), (error: unknown) => axios.isAxiosError(error) && error.code === 'ECONNABORTED');
      assert.ok(performance.now() - started < 2000);
      for (const reply of held.splice(0)) reply();
      for (const response of await Promise.all(slow)) assert.equal(response.status, 200);
      // The timed-out call took no connection with it: the next calls are answered at once.
      const after = await Promise.all(Array.from({ length: 3 }, () => http.post(`${base}/fast`, {}, { timeout: 2000 })));
      assert.deepEqual(after.map((response) => response.status), [200, 200, 200]);
    } finally {
      for (const reply of held.splice(0)) reply();
      answer = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      };
    }
  });

  test('a server that says Keep-Alive: timeout=1 gets its connection closed by the client after the answer, not reused when it may be gone', async () => {
    answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'keep-alive': 'timeout=1' });
      res.end('{"ok":true}');
    };
    try {
      const http = createProviderHttp();
      const before = connections;
      await http.get(`${base}/a`);
      await http.get(`${base}/b`);
      // timeout=1 leaves no margin (the pool keeps a margin in hand): each call opens a new connection.
      assert.equal(connections - before, 2);
    } finally {
      answer = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      };
    }
  });

  test('a redirect is an error, not followed', async () => {
    answer = (_req, res) => {
      res.writeHead(302, { location: `${base}/elsewhere` });
      res.end();
    };
    try {
      await assert.rejects(createProviderHttp().get(`${base}/moved`), (error: unknown) => axios.isAxiosError(error) && error.response?.status === 302);
    } finally {
      answer = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      };
    }
  });

  /** Runs `run` with `handler` answering, then puts the plain JSON answer back. */
  async function answering(handler: typeof answer, run: () => Promise<void>): Promise<void> {
    answer = handler;
    try {
      await run();
    } finally {
      answer = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      };
    }
  }

  test('a GET carries its params in the query string and its headers; the JSON answer is parsed', async () => {
    let seen: { url?: string; auth?: string } = {};
    await answering(
      (req, res) => {
        seen = { url: req.url, auth: req.headers.authorization };
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"access_token":"t","expires_in":"3599"}');
      },
      async () => {
        const response = await createProviderHttp().get(`${base}/oauth/v1/generate`, { params: { grant_type: 'client_credentials', skip: undefined }, headers: { Authorization: 'Basic abc' } });
        assert.deepEqual(response.data, { access_token: 't', expires_in: '3599' });
        assert.deepEqual(seen, { url: '/oauth/v1/generate?grant_type=client_credentials', auth: 'Basic abc' });
      },
    );
  });

  test('a POST sends its JSON with Content-Type and Content-Length', async () => {
    let seen: { body: string; type?: string; length?: string } = { body: '' };
    await answering(
      (req, res) => {
        seen.type = req.headers['content-type'];
        seen.length = req.headers['content-length'];
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      },
      async () => {
        const body = { to: '254700000001', text: { body: 'Asante sana ✓' } };
        server.once('request', (req: IncomingMessage) => req.on('data', (chunk: Buffer) => (seen.body += chunk.toString())));
        await createProviderHttp().post(`${base}/send`, body);
        assert.deepEqual(JSON.parse(seen.body), body);
        assert.equal(seen.type, 'application/json');
        assert.equal(seen.length, String(Buffer.byteLength(JSON.stringify(body))));
      },
    );
  });

  test('an error answer rejects with an AxiosError holding the status, the headers and the parsed body', async () => {
    await answering(
      (_req, res) => {
        res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '7' });
        res.end('{"error":{"code":130429,"message":"Rate limit hit"}}');
      },
      async () => {
        const error = await createProviderHttp().post(`${base}/send`, {}).then(
          () => assert.fail('a 429 must reject'),
          (e: unknown) => e,
        );
        assert.ok(axios.isAxiosError(error));
        assert.equal(error.code, 'ERR_BAD_REQUEST');
        assert.equal(error.response?.status, 429);
        assert.equal(error.response?.headers['retry-after'], '7');
        assert.deepEqual(error.response?.data, { error: { code: 130429, message: 'Rate limit hit' } });
      },
    );
  });

  // The test's own timeout turns a missing deadline into a failure instead of a hang.
  test('the timeout is a deadline for the whole call: an answer that starts and then stalls still ends it (ECONNABORTED)', { timeout: 10_000 }, async () => {
    await answering(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"partial":');
        // ...and never ends: an idle-socket timer would be reset by each trickle; a deadline is not.
        const trickle = setInterval(() => res.write(' '), 50);
        res.on('close', () => clearInterval(trickle));
      },
      async () => {
        const error = await createProviderHttp().get(`${base}/slow`, { timeout: 300 }).then(
          () => assert.fail('a stalled answer must time out'),
          (e: unknown) => e,
        );
        assert.ok(axios.isAxiosError(error));
        assert.equal(error.code, 'ECONNABORTED');
        assert.match(error.message, /timeout of 300ms exceeded/);
      },
    );
  });

  test('an answer larger than the cap is an error, not read into memory whole', async () => {
    await answering(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(Buffer.alloc(MAX_RESPONSE_BYTES + 1, 0x20));
      },
      async () => {
        await assert.rejects(createProviderHttp().get(`${base}/huge`), (error: unknown) => axios.isAxiosError(error) && /maxContentLength/.test(error.message));
      },
    );
  });

  test('a cancelled call rejects with ERR_CANCELED', async () => {
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(createProviderHttp().get(`${base}/a`, { signal: controller.signal }), (error: unknown) => axios.isAxiosError(error) && error.code === 'ERR_CANCELED');
  });

  test('HTTPS: a certificate nobody vouches for is refused; the same server, trusted, answers', async () => {
    const cert = readFileSync(new URL('./fixtures/tls-test-cert.pem', import.meta.url));
    const key = readFileSync(new URL('./fixtures/tls-test-key.pem', import.meta.url));
    const tls = createTlsServer({ cert, key }, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"secure":true}');
    });
    await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve));
    const url = `https://127.0.0.1:${(tls.address() as AddressInfo).port}/x`;
    try {
      await assert.rejects(createProviderHttp().get(url, { timeout: 5000 }), (error: unknown) => axios.isAxiosError(error) && error.response === undefined && /self-signed|certificate/i.test(error.message));
      const trustingPool = new UndiciAgent({ connect: { ca: cert } });
      const trusting = axios.create({ maxRedirects: 0, adapter: leanAdapter(trustingPool) });
      assert.deepEqual((await trusting.get(url, { timeout: 5000 })).data, { secure: true });
      await trustingPool.close();
    } finally {
      tls.closeAllConnections();
      await new Promise((resolve) => tls.close(resolve));
    }
  });
});

describe('what axios\'s own adapter did that provider calls rely on', () => {
  let server: Server;
  let base = '';
  let seen: IncomingMessage | undefined;
  let answer: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.end();
  before(async () => {
    server = createServer((req, res) => {
      seen = req;
      req.resume();
      req.on('end', () => answer(req, res));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  // axios's adapter sent `User-Agent: axios/<version>` on every call. A request without one is a
  // stock WAF/CDN block rule (403 before the API sees it).
  test('provider calls carry a User-Agent, as they did through axios\'s own adapter', async () => {
    answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"messaging_product":"whatsapp","contacts":[{"input":"254712345678","wa_id":"254712345678"}],"messages":[{"id":"wamid.UA"}]}');
    };
    const settings = { baseUrl: base, apiVersion: 'v21.0', phoneId: '1234', token: 't', timeoutMs: 2_000 };
    await createWhatsAppClient(settings, axios.create({ maxRedirects: 0 })).send('254712345678', { type: 'text', body: 'hi' });
    assert.match(String(seen?.headers['user-agent']), /^axios\//, 'control: axios\'s own adapter sends one');
    await createWhatsAppClient(settings).send('254712345678', { type: 'text', body: 'hi' });
    assert.ok(seen?.headers['user-agent'], 'the WhatsApp send went out without a User-Agent header');
  });

  // axios's adapter strips a UTF-8 byte order mark before axios parses the JSON: without that a
  // JSON answer starting with one stays a string and every schema check fails.
  test('a JSON answer that starts with a UTF-8 BOM is still parsed (Daraja OAuth token, then the STK query)', async () => {
    answer = (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' });
      const body = req.url?.startsWith('/oauth/')
        ? { access_token: 'bomToken0001', expires_in: '3599' }
        : { ResponseCode: '0', ResponseDescription: 'accepted', MerchantRequestID: 'm', CheckoutRequestID: 'ws_CO_bom', ResultCode: '0', ResultDesc: 'The service request is processed successfully.' };
      res.end(`\uFEFF${JSON.stringify(body)}`);
    };
    const settings = {
      baseUrl: base,
      consumerKey: 'k',
      consumerSecret: 's',
      shortcode: '174379',
      passkey: 'bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919',
      transactionType: 'CustomerPayBillOnline' as const,
      partyB: undefined,
      timeoutMs: 2_000,
    };
    // Control: through axios's own adapter the same answers are read.
    assert.deepEqual(await createDarajaClient(settings, axios.create({ maxRedirects: 0 })).stkQuery('ws_CO_bom'), { state: 'completed', resultCode: 0, resultDesc: 'The service request is processed successfully.' });
    const result = await createDarajaClient(settings).stkQuery('ws_CO_bom').catch((error: unknown) => `rejected: ${error instanceof Error ? error.message : String(error)}`);
    assert.deepEqual(result, { state: 'completed', resultCode: 0, resultDesc: 'The service request is processed successfully.' });
  });
});

describe('preparedJsonPost: the WhatsApp send with its configuration merged once', () => {
  let server: Server;
  let base = '';
  const seen: Array<{ headers: IncomingMessage['headers']; method: string | undefined; url: string | undefined; body: string }> = [];
  let answer: (res: ServerResponse) => void = (res) => res.end();
  before(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push({ headers: req.headers, method: req.method, url: req.url, body: Buffer.concat(chunks).toString() });
        answer(res);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  const options = { timeout: 2_000, headers: { Authorization: 'Bearer t0k', 'Content-Type': 'application/json' } };
  /** What the server saw of a request, less what differs between any two calls (the connection). */
  const request = (i: number) => {
    const { connection: _c, ...headers } = seen[i]!.headers;
    return { ...seen[i]!, headers };
  };

  test('sends what http.post sends (method, path, headers, body) and answers the same parsed response', async () => {
    answer = (res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"messages":[{"id":"wamid.P"}]}');
    };
    const http = createProviderHttp();
    seen.length = 0;
    const body = { to: '254712345678', text: { body: 'Habari, ü €' } };
    const viaPost = await http.post(`${base}/v21.0/1/messages`, body, options);
    const viaPrepared = await preparedJsonPost(http, options)(`${base}/v21.0/1/messages`, body);
    assert.deepEqual(request(1), request(0));
    assert.equal(request(0).headers.authorization, 'Bearer t0k');
    assert.deepEqual(viaPrepared.data, viaPost.data);
    assert.deepEqual(viaPrepared.data, { messages: [{ id: 'wamid.P' }] });
    assert.equal(viaPrepared.status, 200);
  });

  test('an error answer is the same AxiosError with its body parsed, so Meta\'s code is read (and a body that is not JSON stays text)', async () => {
    const http = createProviderHttp();
    const post = preparedJsonPost(http, options);
    answer = (res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end('{"error":{"message":"Recipient not on WhatsApp","code":131026}}');
    };
    const viaPost = await http.post(`${base}/m`, {}, options).catch((error: unknown) => error);
    const viaPrepared = await post(`${base}/m`, {}).catch((error: unknown) => error);
    assert.ok(axios.isAxiosError(viaPrepared) && axios.isAxiosError(viaPost));
    assert.equal(viaPrepared.response?.status, 400);
    assert.deepEqual(viaPrepared.response?.data, viaPost.response?.data);
    assert.deepEqual(viaPrepared.response?.data, { error: { message: 'Recipient not on WhatsApp', code: 131026 } });
    answer = (res) => {
      res.writeHead(502, { 'content-type': 'text/html' });
      res.end('<html>Bad gateway</html>');
    };
    const html = await post(`${base}/m`, {}).catch((error: unknown) => error);
    assert.ok(axios.isAxiosError(html));
    assert.equal(html.response?.data, '<html>Bad gateway</html>');
  });

  test('an instance with another adapter goes through http.post unchanged (axios\'s own adapter sends its own User-Agent)', async () => {
    answer = (res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":1}');
    };
    seen.length = 0;
    const stock = axios.create({ maxRedirects: 0 });
    assert.deepEqual((await preparedJsonPost(stock, options)(`${base}/m`, { a: 1 })).data, { ok: 1 });
    assert.match(String(seen[0]?.headers['user-agent']), /^axios\//);
  });
});
