/**
 * The provider HTTP client (src/providers/http.ts) over real HTTP on 127.0.0.1: connections
 * are reused, TCP keep-alive is armed once per socket rather than once per request, the
 * server's Keep-Alive timeout hint is still honoured, and redirects are not followed.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Agent as HttpAgent } from 'node:http';
import { Socket, type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import axios from 'axios';
import { armKeepAliveOnce, createProviderHttp } from '../src/providers/http.js';

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
  test('twenty sequential calls: one connection, keep-alive set a few times in all (a plain agent changes it twice per call)', async () => {
    const before = connections;
    const http = createProviderHttp();
    const ours = await keepAliveChanges(async () => {
      for (let i = 0; i < 20; i += 1) assert.equal((await http.post(`${base}/send`, { i }, { timeout: 2000 })).status, 200);
    });
    assert.equal(connections - before, 1, 'the connection is reused');
    assert.ok(ours <= 3, `keep-alive changed ${ours} times`);

    const plainAgent = new HttpAgent({ keepAlive: true });
    const plain = axios.create({ maxRedirects: 0, httpAgent: plainAgent });
    const theirs = await keepAliveChanges(async () => {
      for (let i = 0; i < 20; i += 1) await plain.post(`${base}/send`, { i }, { timeout: 2000 });
    });
    plainAgent.destroy();
    assert.ok(theirs >= 39, `with Node's own agent it changed ${theirs} times`);
  });

  test("a server that says Keep-Alive: timeout=1 gets its connection closed by the client, as Node's agent does", async () => {
    answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'keep-alive': 'timeout=1' });
      res.end('{"ok":true}');
    };
    try {
      const agent = armKeepAliveOnce(new HttpAgent({ keepAlive: true }));
      const http = axios.create({ httpAgent: agent, maxRedirects: 0 });
      const before = connections;
      await http.get(`${base}/a`);
      await http.get(`${base}/b`);
      // timeout=1 leaves no margin (Node keeps a second in hand): each call opens a new connection.
      assert.equal(connections - before, 2);
      agent.destroy();
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
});
