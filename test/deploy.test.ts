/**
 * The service runs with the same Node flags wherever it starts: the Docker image (Fly.io),
 * `npm start`, `npm run start:prod`, and the benchmarks' app servers (bench/lib.ts), so that
 * what the benchmarks measure is what is deployed.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { APP_NODE_FLAGS } from '../bench/lib.js';

const flagsOf = (args: readonly string[]) => args.filter((arg) => arg.startsWith('--') && arg !== '--import');

test('the Docker image, npm start, start:prod and the benchmarks start node with the same flags', () => {
  assert.ok(APP_NODE_FLAGS.length > 0);
  const cmd = /^CMD (\[.*\])$/m.exec(readFileSync('Dockerfile', 'utf8'));
  assert.ok(cmd, 'Dockerfile has an exec-form CMD');
  const dockerArgs = JSON.parse(cmd[1]!) as string[];
  assert.equal(dockerArgs[0], 'node');
  assert.deepEqual(flagsOf(dockerArgs), APP_NODE_FLAGS);
  const scripts = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> }).scripts;
  for (const name of ['start', 'start:prod']) {
    const args = scripts[name]!.split(/\s+/);
    assert.equal(args[0], 'node', name);
    assert.deepEqual(flagsOf(args), APP_NODE_FLAGS, name);
  }
});
