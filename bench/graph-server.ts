/**
 * The fake Graph API of the benchmarks, in a process of its own so that answering the app's
 * replies never delays the load generator's clock (its measured latencies would grow by that
 * process's own event-loop lag). Answers every POST 200 with a wamid and records when the first
 * message to each recipient arrived, on the system-wide monotonic clock (process.hrtime), so
 * the load generator can compare it with its own send times.
 *   GET /__arrivals   the arrivals so far, { [to]: ms }
 *   POST /__clear     forgets them
 * Prints `READY <port>`; exits on SIGTERM.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const arrivals = new Map<string, number>();
let n = 0;

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const at = Number(process.hrtime.bigint()) / 1e6;
    if (req.url === '/__arrivals') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(Object.fromEntries(arrivals)));
      return;
    }
    if (req.url === '/__clear') {
      arrivals.clear();
      res.writeHead(204).end();
      return;
    }
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString()) as { to: string };
      if (!arrivals.has(body.to)) arrivals.set(body.to, at);
    } catch {
      /* counted as missing */
    }
    n += 1;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ messaging_product: 'whatsapp', messages: [{ id: `wamid.reply.${n}` }] }));
  });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`READY ${(server.address() as AddressInfo).port}\n`));
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
