/**
 * Group commit and write coalescing (src/batch.ts). No clocks and no sleeps: every batch is
 * finished by hand through a deferred promise, and "later" means a number of event-loop turns
 * (setImmediate), never milliseconds. Then a fast-check property drives random workloads and
 * checks the batcher's invariants (own result once, per-key order, key exclusivity, limits).
 */
import { createHook } from 'node:async_hooks';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { createBatcher, createCoalescer, type Batcher, type BatcherOptions, type Coalescer } from '../src/batch.js';

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

type Deferred<T> = { promise: Promise<T>; resolve(value: T): void; reject(error: unknown): void };

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** One turn of the event loop (everything queued with setImmediate before it has run). */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** `n` turns of the event loop. */
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i += 1) await turn();
}

/** Waits (in event-loop turns, not time) until `condition` holds; fails after `limit` turns. */
async function until(condition: () => boolean, what: string, limit = 200): Promise<void> {
  for (let i = 0; i < limit; i += 1) {
    if (condition()) return;
    await turn();
  }
  assert.fail(`still waiting after ${limit} turns: ${what}`);
}

/** Observes a promise without consuming it: settled state, value, error. */
type Observed<T> = { settled: boolean; fulfilled: boolean; value?: T; error?: unknown; promise: Promise<T> };

function observe<T>(promise: Promise<T>): Observed<T> {
  const observed: Observed<T> = { settled: false, fulfilled: false, promise };
  promise.then(
    (value) => {
      observed.settled = true;
      observed.fulfilled = true;
      observed.value = value;
    },
    (error: unknown) => {
      observed.settled = true;
      observed.error = error;
    },
  );
  return observed;
}

/** A `run` call the test finishes by hand. */
type Call<I, O> = { items: readonly I[]; done: Deferred<readonly O[]> };

/**
 * A batcher over string items whose key is the item's first character ('a1' has key 'a').
 * Every `run` call is recorded and stays outstanding until the test resolves or rejects it.
 */
function manualBatcher(
  options: Partial<Pick<BatcherOptions<string, string>, 'maxBatch' | 'maxConcurrent' | 'spareAfterMs'>> = {},
): { batcher: Batcher<string, string>; calls: Array<Call<string, string>>; outstanding: () => number; maxOutstanding: () => number } {
  const calls: Array<Call<string, string>> = [];
  let outstanding = 0;
  let maxOutstanding = 0;
  const batcher = createBatcher<string, string>({
    maxBatch: options.maxBatch ?? 100,
    maxConcurrent: options.maxConcurrent ?? 100,
    ...(options.spareAfterMs === undefined ? {} : { spareAfterMs: options.spareAfterMs }),
    key: (item) => item.slice(0, 1),
    run(items) {
      const done = deferred<readonly string[]>();
      calls.push({ items: [...items], done });
      outstanding += 1;
      maxOutstanding = Math.max(maxOutstanding, outstanding);
      return done.promise.finally(() => {
        outstanding -= 1;
      });
    },
  });
  return { batcher, calls, outstanding: () => outstanding, maxOutstanding: () => maxOutstanding };
}

/** The results a well-behaved `run` answers: one per item, in order, traceable to its item. */
const answer = (items: readonly string[]): string[] => items.map((item) => `result:${item}`);

/** Resolves call `index` with the well-behaved answer. */
function finish(calls: Array<Call<string, string>>, index: number): void {
  const call = calls[index];
  assert.ok(call, `run call #${index} exists`);
  call.done.resolve(answer(call.items));
}

const batchesOf = (calls: Array<Call<string, string>>): string[][] => calls.map((call) => [...call.items]);

// ---------------------------------------------------------------------------
// createBatcher: batching and maxBatch
// ---------------------------------------------------------------------------

describe('createBatcher: a spare batch when the running ones are slow', () => {
  /** Real time here (the spare lane is about time): a short threshold, waited for by polling. */
  const waitUntil = async (condition: () => boolean, what: string): Promise<void> => {
    const deadline = performance.now() + 5_000;
    while (!condition()) {
      if (performance.now() > deadline) assert.fail(`still waiting: ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  };

  test('a batch stuck past spareAfterMs lets one more start beyond maxConcurrent, never two; its own keys still wait', async () => {
    // A threshold far above a few event-loop turns, even on a loaded CI machine (30 ms was not).
    const { batcher, calls, maxOutstanding } = manualBatcher({ maxConcurrent: 1, spareAfterMs: 300 });
    const stuck = observe(batcher.submit('a1'));
    await until(() => calls.length === 1, 'the first batch to start');
    const sameKey = observe(batcher.submit('a2'));
    const other = observe(batcher.submit('b1'));
    await turns(5);
    assert.equal(calls.length, 1, 'no spare before the threshold');
    await waitUntil(() => calls.length === 2, 'the spare batch');
    assert.deepEqual(calls[1]!.items, ['b1'], "the stuck batch's key waits; the other goes in the spare");
    // The spare is stuck too: no third batch, however long.
    const third = observe(batcher.submit('c1'));
    await new Promise((resolve) => setTimeout(resolve, 80));
    assert.equal(calls.length, 2);
    assert.equal(maxOutstanding(), 2);
    finish(calls, 1);
    await until(() => other.settled && calls.length === 3, 'the spare to finish and the next batch to start');
    assert.deepEqual(calls[2]!.items, ['c1']);
    finish(calls, 0);
    finish(calls, 2);
    await until(() => stuck.settled && third.settled && calls.length === 4, 'a2 after a1');
    assert.deepEqual(calls[3]!.items, ['a2']);
    finish(calls, 3);
    await until(() => sameKey.settled, 'a2 answered');
    assert.equal(sameKey.value, 'result:a2');
  });

  test('was a defect (a first fix of the spin below): the spare coming due between the pump\'s look and its timer still starts, without a timer', async () => {
    // The clock, by hand: each reading after `ticking` is 2 ms after the one before.
    const realNow = performance.now.bind(performance);
    let clock = 0;
    let ticking = false;
    performance.now = () => {
      const now = clock;
      if (ticking) clock += 2;
      return now;
    };
    try {
      const { batcher, calls } = manualBatcher({ maxConcurrent: 1, spareAfterMs: 100 });
      observe(batcher.submit('a1'));
      await until(() => calls.length === 1, 'the first batch (started at 0)');
      // The pump reads 99 (not slow yet), then 101 when it would set the timer: due already.
      clock = 99;
      ticking = true;
      const other = observe(batcher.submit('b1'));
      await until(() => calls.length === 2, 'the spare batch');
      assert.deepEqual(calls[1]!.items, ['b1']);
      finish(calls, 1);
      finish(calls, 0);
      await until(() => other.settled, 'b1 answered');
    } finally {
      performance.now = realNow;
    }
  });

  test('an item whose key is busy, with the spare already allowed, sets no timers while it waits (was a defect: about 1,000 a second)', async () => {
    const { batcher, calls } = manualBatcher({ maxConcurrent: 1, spareAfterMs: 30 });
    observe(batcher.submit('a1'));
    await until(() => calls.length === 1, 'the first batch');
    await new Promise((resolve) => setTimeout(resolve, 60));
    let timers = 0;
    const hook = createHook({
      init(_id, type) {
        if (type === 'Timeout') timers += 1;
      },
    });
    hook.enable();
    const same = observe(batcher.submit('a2'));
    await new Promise((resolve) => setTimeout(resolve, 100));
    hook.disable();
    // The test's own timer is one.
    assert.ok(timers <= 2, `${timers} timers while a2 waited`);
    assert.equal(calls.length, 1);
    finish(calls, 0);
    await until(() => calls.length === 2, 'a2 after a1');
    finish(calls, 1);
    await until(() => same.settled, 'a2 answered');
  });

  test('without spareAfterMs, a stuck batch holds the others back', async () => {
    const { batcher, calls } = manualBatcher({ maxConcurrent: 1 });
    observe(batcher.submit('a1'));
    await until(() => calls.length === 1, 'the first batch');
    observe(batcher.submit('b1'));
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(calls.length, 1);
    finish(calls, 0);
    await until(() => calls.length === 2, 'b1 after a1');
    finish(calls, 1);
  });
});

describe('createBatcher: one turn, one batch', () => {
  test('items submitted in the same turn go in one batch, in submission order, on the next turn (not synchronously)', async () => {
    const { batcher, calls } = manualBatcher();
    const items = ['a1', 'b1', 'c1', 'd1', 'e1'];
    const results = items.map((item) => observe(batcher.submit(item)));
    assert.equal(calls.length, 0, 'run is not called synchronously from submit');
    assert.equal(batcher.waiting, 5);
    await turn();
    assert.deepEqual(batchesOf(calls), [items]);
    assert.equal(batcher.waiting, 0, 'running items are not counted as waiting');
    await turns(3);
    assert.ok(results.every((r) => !r.settled), 'nothing settles before run answers');
    finish(calls, 0);
    assert.deepEqual(await Promise.all(results.map((r) => r.promise)), answer(items));
    assert.equal(calls.length, 1);
  });

  test('10 items with maxBatch 4 and room to spare -> batches of 4, 4, 2 started together', async () => {
    const { batcher, calls } = manualBatcher({ maxBatch: 4, maxConcurrent: 10 });
    const items = ['a0', 'b1', 'c2', 'd3', 'e4', 'f5', 'g6', 'h7', 'i8', 'j9'];
    const results = items.map((item) => batcher.submit(item));
    await turn();
    assert.deepEqual(batchesOf(calls), [items.slice(0, 4), items.slice(4, 8), items.slice(8)]);
    assert.equal(batcher.waiting, 0);
    // Finish them out of order: each submitter still gets its own result.
    finish(calls, 2);
    finish(calls, 0);
    finish(calls, 1);
    assert.deepEqual(await Promise.all(results), answer(items));
  });

  test('10 items with maxBatch 4 and maxConcurrent 1 -> batches of 4, 4, 2 one after the other', async () => {
    const { batcher, calls, maxOutstanding } = manualBatcher({ maxBatch: 4, maxConcurrent: 1 });
    const items = ['a0', 'b1', 'c2', 'd3', 'e4', 'f5', 'g6', 'h7', 'i8', 'j9'];
    const results = items.map((item) => observe(batcher.submit(item)));
    await turn();
    assert.deepEqual(batchesOf(calls), [items.slice(0, 4)]);
    assert.equal(batcher.waiting, 6);
    await turns(5);
    assert.equal(calls.length, 1, 'the second batch waits for the first');

    finish(calls, 0);
    await until(() => calls.length === 2, 'second batch');
    assert.deepEqual(calls[1]?.items, items.slice(4, 8));
    assert.equal(batcher.waiting, 2);
    assert.deepEqual(
      results.map((r) => r.settled),
      [true, true, true, true, false, false, false, false, false, false],
    );
    await turns(5);
    assert.equal(calls.length, 2, 'the third batch waits for the second');

    finish(calls, 1);
    await until(() => calls.length === 3, 'third batch');
    assert.deepEqual(calls[2]?.items, items.slice(8));
    assert.equal(batcher.waiting, 0);
    finish(calls, 2);
    assert.deepEqual(await Promise.all(results.map((r) => r.promise)), answer(items));
    assert.equal(maxOutstanding(), 1);
  });

  test('maxBatch 1 runs every item alone', async () => {
    const { batcher, calls } = manualBatcher({ maxBatch: 1, maxConcurrent: 10 });
    const items = ['a1', 'b1', 'c1'];
    const results = items.map((item) => batcher.submit(item));
    await turn();
    assert.deepEqual(batchesOf(calls), [['a1'], ['b1'], ['c1']]);
    calls.forEach((_, index) => finish(calls, index));
    assert.deepEqual(await Promise.all(results), answer(items));
  });

  test('group commit: items submitted over several turns while a batch runs go together in the next batch', async () => {
    const { batcher, calls } = manualBatcher({ maxBatch: 10, maxConcurrent: 1 });
    const first = [batcher.submit('a1'), batcher.submit('b1')];
    await turn();
    assert.deepEqual(batchesOf(calls), [['a1', 'b1']]);

    const later = [batcher.submit('c1'), batcher.submit('d1')];
    await turns(2);
    later.push(batcher.submit('e1'));
    await turns(2);
    later.push(batcher.submit('f1'));
    await turns(2);
    assert.equal(calls.length, 1, 'nothing starts while the only slot is busy');
    assert.equal(batcher.waiting, 4);

    finish(calls, 0);
    assert.deepEqual(await Promise.all(first), answer(['a1', 'b1']));
    await until(() => calls.length === 2, 'next batch');
    assert.deepEqual(calls[1]?.items, ['c1', 'd1', 'e1', 'f1']);
    finish(calls, 1);
    assert.deepEqual(await Promise.all(later), answer(['c1', 'd1', 'e1', 'f1']));
  });

  test('an idle batcher starts again when new items arrive after everything has settled', async () => {
    const { batcher, calls } = manualBatcher({ maxBatch: 10, maxConcurrent: 1 });
    const one = batcher.submit('a1');
    await turn();
    finish(calls, 0);
    assert.equal(await one, 'result:a1');
    await turns(3);
    assert.equal(calls.length, 1);

    const two = [batcher.submit('a2'), batcher.submit('b2')];
    await turn();
    assert.deepEqual(calls[1]?.items, ['a2', 'b2']);
    finish(calls, 1);
    assert.deepEqual(await Promise.all(two), ['result:a2', 'result:b2']);
  });
});

// ---------------------------------------------------------------------------
// createBatcher: keys
// ---------------------------------------------------------------------------

describe('createBatcher: items with the same key', () => {
  test('two items with the same key submitted together go to different batches, in submission order', async () => {
    const { batcher, calls } = manualBatcher({ maxBatch: 10, maxConcurrent: 10 });
    const results = ['a1', 'a2', 'b1'].map((item) => observe(batcher.submit(item)));
    await turn();
    assert.deepEqual(batchesOf(calls), [['a1', 'b1']], 'a2 is neither in the first batch nor in a second concurrent one');
    assert.equal(batcher.waiting, 1);
    await turns(5);
    assert.equal(calls.length, 1, 'a2 waits while a1 runs even though slots are free');

    finish(calls, 0);
    await until(() => calls.length === 2, 'batch with a2');
    assert.deepEqual(calls[1]?.items, ['a2']);
    assert.equal(results[0]?.value, 'result:a1');
    assert.equal(results[2]?.value, 'result:b1');
    assert.equal(results[1]?.settled, false);
    finish(calls, 1);
    assert.equal(await results[1]?.promise, 'result:a2');
  });

  test('many items of one key run one per batch, strictly one after the other, in order', async () => {
    const { batcher, calls } = manualBatcher({ maxBatch: 10, maxConcurrent: 5 });
    const items = ['a1', 'a2', 'a3', 'a4', 'b1', 'b2', 'c1'];
    const results = items.map((item) => batcher.submit(item));
    await turn();
    assert.deepEqual(batchesOf(calls), [['a1', 'b1', 'c1']]);
    finish(calls, 0);
    await until(() => calls.length === 2, 'second batch');
    assert.deepEqual(calls[1]?.items, ['a2', 'b2']);
    await turns(3);
    assert.equal(calls.length, 2);
    finish(calls, 1);
    await until(() => calls.length === 3, 'third batch');
    assert.deepEqual(calls[2]?.items, ['a3']);
    await turns(3);
    assert.equal(calls.length, 3);
    finish(calls, 2);
    await until(() => calls.length === 4, 'fourth batch');
    assert.deepEqual(calls[3]?.items, ['a4']);
    finish(calls, 3);
    assert.deepEqual(await Promise.all(results), answer(items));
  });

  test('while a batch holding key k runs, a later k waits even with a free slot, and other keys behind it go ahead', async () => {
    const { batcher, calls } = manualBatcher({ maxBatch: 10, maxConcurrent: 2 });
    const a1 = observe(batcher.submit('a1'));
    await turn();
    assert.deepEqual(batchesOf(calls), [['a1']]);

    // Next turn: a2 first in line, then other keys. One slot is free.
    const a2 = observe(batcher.submit('a2'));
    const b1 = observe(batcher.submit('b1'));
    const c1 = observe(batcher.submit('c1'));
    await turn();
    assert.deepEqual(batchesOf(calls), [['a1'], ['b1', 'c1']], 'b1 and c1 are not blocked behind a2');
    assert.equal(batcher.waiting, 1, 'a2 is still waiting');

    // Finishing b1/c1 frees a slot, but a is still busy: a2 keeps waiting.
    finish(calls, 1);
    assert.equal(await b1.promise, 'result:b1');
    assert.equal(await c1.promise, 'result:c1');
    await turns(5);
    assert.equal(calls.length, 2, 'a2 waits for a1 even with both slots free');
    assert.equal(a2.settled, false);

    finish(calls, 0);
    assert.equal(await a1.promise, 'result:a1');
    await until(() => calls.length === 3, 'batch with a2');
    assert.deepEqual(calls[2]?.items, ['a2']);
    finish(calls, 2);
    assert.equal(await a2.promise, 'result:a2');
  });

  test('a busy key keeps its place: once free, it goes first in the next batch ahead of newer items', async () => {
    const { batcher, calls } = manualBatcher({ maxBatch: 2, maxConcurrent: 1 });
    const all = [batcher.submit('a1')];
    await turn();
    // a2 is oldest in the queue; b1, c1, d1 arrive after it.
    all.push(batcher.submit('a2'), batcher.submit('b1'), batcher.submit('c1'), batcher.submit('d1'));
    await turns(2);
    assert.equal(batcher.waiting, 4);
    finish(calls, 0);
    await until(() => calls.length === 2, 'second batch');
    assert.deepEqual(calls[1]?.items, ['a2', 'b1'], 'a2 keeps its place at the front; maxBatch still applies');
    finish(calls, 1);
    await until(() => calls.length === 3, 'third batch');
    assert.deepEqual(calls[2]?.items, ['c1', 'd1']);
    finish(calls, 2);
    assert.deepEqual(await Promise.all(all), answer(['a1', 'a2', 'b1', 'c1', 'd1']));
  });

  test('skipping a busy key also skips its later items, so a key never runs out of order', async () => {
    const { batcher, calls } = manualBatcher({ maxBatch: 10, maxConcurrent: 3 });
    const all = [batcher.submit('a1'), batcher.submit('a2'), batcher.submit('b1'), batcher.submit('a3'), batcher.submit('b2'), batcher.submit('c1')];
    await turn();
    assert.deepEqual(batchesOf(calls), [['a1', 'b1', 'c1']]);
    finish(calls, 0);
    await until(() => calls.length === 2, 'second batch');
    assert.deepEqual(calls[1]?.items, ['a2', 'b2']);
    finish(calls, 1);
    await until(() => calls.length === 3, 'third batch');
    assert.deepEqual(calls[2]?.items, ['a3']);
    finish(calls, 2);
    assert.deepEqual(await Promise.all(all), answer(['a1', 'a2', 'b1', 'a3', 'b2', 'c1']));
  });

  test('the key comes from options.key (object items keyed by a field)', async () => {
    type Msg = { from: string; text: string };
    const seen: Msg[][] = [];
    const batcher = createBatcher<Msg, string>({
      maxBatch: 10,
      maxConcurrent: 10,
      key: (msg) => msg.from,
      run: async (msgs) => {
        seen.push([...msgs]);
        return msgs.map((m) => `${m.from}:${m.text}`);
      },
    });
    const msgs: Msg[] = [
      { from: 'alice', text: 'hi' },
      { from: 'bob', text: 'yo' },
      { from: 'alice', text: 'again' },
    ];
    const results = await Promise.all(msgs.map((m) => batcher.submit(m)));
    assert.deepEqual(results, ['alice:hi', 'bob:yo', 'alice:again']);
    assert.deepEqual(
      seen.map((batch) => batch.map((m) => m.text)),
      [['hi', 'yo'], ['again']],
    );
  });
});

// ---------------------------------------------------------------------------
// createBatcher: concurrency and results
// ---------------------------------------------------------------------------

describe('createBatcher: maxConcurrent and results', () => {
  test('never more than maxConcurrent run calls outstanding, and a freed slot is refilled', async () => {
    const { batcher, calls, outstanding, maxOutstanding } = manualBatcher({ maxBatch: 1, maxConcurrent: 3 });
    const items = Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(97 + i)}${i}`);
    const results = items.map((item) => batcher.submit(item));
    await turn();
    assert.equal(calls.length, 3);
    assert.equal(outstanding(), 3);
    assert.equal(batcher.waiting, 5);
    await turns(5);
    assert.equal(calls.length, 3, 'no fourth run while three are outstanding');

    for (let finished = 0; finished < items.length; finished += 1) {
      finish(calls, finished);
      const expected = Math.min(items.length, finished + 4);
      await until(() => calls.length === expected && outstanding() === expected - finished - 1, `run call #${expected}`);
      await turns(2);
      assert.equal(calls.length, expected, 'exactly one new run per freed slot');
      assert.ok(outstanding() <= 3);
    }
    assert.deepEqual(await Promise.all(results), answer(items));
    assert.deepEqual(batchesOf(calls), items.map((item) => [item]), 'started in submission order');
    assert.equal(maxOutstanding(), 3);
  });

  test('each submitter gets its own result, across batches finishing in any order', async () => {
    const { batcher, calls } = manualBatcher({ maxBatch: 3, maxConcurrent: 4 });
    const items = ['a1', 'b1', 'c1', 'd1', 'e1', 'f1', 'g1', 'h1', 'i1', 'j1', 'k1'];
    const results = items.map((item) => batcher.submit(item));
    await turn();
    assert.equal(calls.length, 4);
    for (const index of [3, 1, 0, 2]) finish(calls, index);
    const values = await Promise.all(results);
    assert.deepEqual(values, answer(items));
  });

  test('results are matched by position, not by value', async () => {
    // run answers positions: item i of a batch gets `${batchNo}.${i}`; duplicates in the items do not confuse it.
    let batchNo = 0;
    const batcher = createBatcher<{ key: string; same: string }, string>({
      maxBatch: 3,
      maxConcurrent: 1,
      key: (item) => item.key,
      run: async (items) => {
        batchNo += 1;
        return items.map((_, i) => `${batchNo}.${i}`);
      },
    });
    const results = await Promise.all(['a', 'b', 'c', 'd'].map((key) => batcher.submit({ key, same: 'x' })));
    assert.deepEqual(results, ['1.0', '1.1', '1.2', '2.0']);
  });

  test('extra results beyond the items are ignored', async () => {
    const batcher = createBatcher<string, number>({
      maxBatch: 10,
      maxConcurrent: 1,
      key: (item) => item,
      run: async (items) => [...items.map((_, i) => i), 99, 100],
    });
    assert.deepEqual(await Promise.all([batcher.submit('a'), batcher.submit('b')]), [0, 1]);
  });
});

// ---------------------------------------------------------------------------
// createBatcher: failures
// ---------------------------------------------------------------------------

describe('createBatcher: failures', () => {
  test('a rejected run rejects exactly the items of that batch, with that error; later batches still run', async () => {
    const { batcher, calls } = manualBatcher({ maxBatch: 2, maxConcurrent: 1 });
    const items = ['a0', 'b1', 'c2', 'd3', 'e4', 'f5'];
    const results = items.map((item) => observe(batcher.submit(item)));
    const boom = new Error('database down');

    await turn();
    finish(calls, 0);
    await until(() => calls.length === 2, 'second batch');
    assert.deepEqual(calls[1]?.items, ['c2', 'd3']);
    calls[1]?.done.reject(boom);
    await until(() => calls.length === 3, 'third batch after the failure');
    assert.deepEqual(calls[2]?.items, ['e4', 'f5']);
    finish(calls, 2);

    await Promise.allSettled(results.map((r) => r.promise));
    assert.deepEqual(
      results.map((r) => r.fulfilled),
      [true, true, false, false, true, true],
    );
    assert.equal(results[2]?.error, boom, 'the very error object run rejected with');
    assert.equal(results[3]?.error, boom);
    assert.deepEqual(
      results.filter((r) => r.fulfilled).map((r) => r.value),
      answer(['a0', 'b1', 'e4', 'f5']),
    );
  });

  test('a rejected batch among concurrent ones leaves the others alone, and frees its keys', async () => {
    const { batcher, calls } = manualBatcher({ maxBatch: 2, maxConcurrent: 3 });
    const first = ['a1', 'b1', 'c1', 'd1', 'e1', 'f1'].map((item) => observe(batcher.submit(item)));
    const second = ['a2', 'c2'].map((item) => observe(batcher.submit(item)));
    await turn();
    assert.deepEqual(batchesOf(calls), [['a1', 'b1'], ['c1', 'd1'], ['e1', 'f1']]);
    const boom = new Error('batch 2 failed');
    calls[1]?.done.reject(boom);
    // c is free again (its batch failed) but a is still busy: only c2 may go.
    await until(() => calls.length === 4, 'c2 after its key is freed');
    assert.deepEqual(calls[3]?.items, ['c2']);
    await turns(3);
    assert.equal(calls.length, 4, 'a2 still waits for a1');
    finish(calls, 0);
    await until(() => calls.length === 5, 'a2 after a1');
    assert.deepEqual(calls[4]?.items, ['a2']);
    finish(calls, 2);
    finish(calls, 3);
    finish(calls, 4);
    await Promise.allSettled([...first, ...second].map((r) => r.promise));
    assert.deepEqual(
      first.map((r) => (r.fulfilled ? r.value : r.error)),
      ['result:a1', 'result:b1', boom, boom, 'result:e1', 'result:f1'],
    );
    assert.deepEqual(
      second.map((r) => r.value),
      ['result:a2', 'result:c2'],
    );
  });

  test('run answering too few results rejects the missing items and resolves the others', async () => {
    const answers: Array<(items: readonly string[]) => readonly string[]> = [
      (items) => answer(items).slice(0, 1), // 1 of 3
      () => [], // 0 of 3
      (items) => answer(items), // all
    ];
    const calls: string[][] = [];
    const batcher = createBatcher<string, string>({
      maxBatch: 3,
      maxConcurrent: 1,
      key: (item) => item,
      run: async (items) => {
        calls.push([...items]);
        const respond = answers[calls.length - 1];
        assert.ok(respond);
        return respond(items);
      },
    });
    const items = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
    const settled = await Promise.allSettled(items.map((item) => batcher.submit(item)));
    assert.deepEqual(calls, [['a', 'b', 'c'], ['d', 'e', 'f'], ['g', 'h']], 'a short answer does not stop later batches');
    // First batch: a resolves, b and c reject. Second batch: all three reject.
    assert.deepEqual(settled[0], { status: 'fulfilled', value: 'result:a' });
    for (const index of [1, 2, 3, 4, 5]) {
      const outcome = settled[index];
      assert.equal(outcome?.status, 'rejected', `item ${items[index]} rejects`);
      assert.ok(outcome.reason instanceof Error);
      assert.match(outcome.reason.message, index < 3 ? /\b1 results for 3 items\b/ : /\b0 results for 3 items\b/);
    }
    assert.deepEqual(settled.slice(6), [
      { status: 'fulfilled', value: 'result:g' },
      { status: 'fulfilled', value: 'result:h' },
    ]);
  });

  test('a run that throws synchronously rejects its batch like a rejection; later batches still run', async () => {
    const boom = new Error('sync throw');
    const calls: string[][] = [];
    const batcher = createBatcher<string, string>({
      maxBatch: 2,
      maxConcurrent: 1,
      key: (item) => item,
      run(items) {
        calls.push([...items]);
        if (calls.length === 1) throw boom;
        return Promise.resolve(answer(items));
      },
    });
    const settled = await Promise.allSettled(['a', 'b', 'c', 'a'].map((item) => batcher.submit(item)));
    assert.deepEqual(calls, [['a', 'b'], ['c', 'a']]);
    assert.deepEqual(settled, [
      { status: 'rejected', reason: boom },
      { status: 'rejected', reason: boom },
      { status: 'fulfilled', value: 'result:c' },
      { status: 'fulfilled', value: 'result:a' },
    ]);
    assert.equal((settled[0] as PromiseRejectedResult).reason, boom, 'the same error object');
  });

  test('a synchronous throw frees the slot and the keys (maxConcurrent 1, same key next)', async () => {
    let n = 0;
    const batcher = createBatcher<string, string>({
      maxBatch: 5,
      maxConcurrent: 1,
      key: () => 'same',
      run(items) {
        n += 1;
        if (n <= 2) throw new Error(`fail ${n}`);
        return Promise.resolve(answer(items));
      },
    });
    const settled = await Promise.allSettled(['x', 'y', 'z'].map((item) => batcher.submit(item)));
    assert.deepEqual(
      settled.map((s) => (s.status === 'fulfilled' ? s.value : (s.reason as Error).message)),
      ['fail 1', 'fail 2', 'result:z'],
    );
  });
});

// ---------------------------------------------------------------------------
// createBatcher: options and `waiting`
// ---------------------------------------------------------------------------

describe('createBatcher: options and waiting', () => {
  const run = async (items: readonly string[]): Promise<readonly string[]> => items;
  const key = (item: string): string => item;

  for (const [maxBatch, maxConcurrent] of [
    [0, 1],
    [1, 0],
    [0, 0],
    [-1, 1],
    [1, -5],
    [0.5, 1],
    [1, 0.999],
    [-Infinity, 1],
  ] as const) {
    test(`maxBatch ${maxBatch}, maxConcurrent ${maxConcurrent} -> RangeError`, () => {
      assert.throws(() => createBatcher({ maxBatch, maxConcurrent, key, run }), RangeError);
    });
  }

  test('maxBatch 1 and maxConcurrent 1 are accepted', async () => {
    const batcher = createBatcher({ maxBatch: 1, maxConcurrent: 1, key, run });
    assert.equal(batcher.waiting, 0);
    assert.equal(await batcher.submit('a'), 'a');
  });

  test('waiting counts queued items, not running ones, including items held back by a busy key', async () => {
    const { batcher, calls } = manualBatcher({ maxBatch: 2, maxConcurrent: 2 });
    assert.equal(batcher.waiting, 0);
    const all: Array<Promise<string>> = [];
    for (const item of ['a1', 'a2', 'b1', 'c1', 'd1', 'e1']) {
      all.push(batcher.submit(item));
    }
    assert.equal(batcher.waiting, 6, 'all queued before the first turn');
    await turn();
    // Batch 1: a1, b1. Batch 2: c1, d1 (a2 skipped: a is taken/busy). Left: a2, e1.
    assert.deepEqual(batchesOf(calls), [['a1', 'b1'], ['c1', 'd1']]);
    assert.equal(batcher.waiting, 2);
    all.push(batcher.submit('f1'));
    assert.equal(batcher.waiting, 3);
    finish(calls, 1);
    await until(() => calls.length === 3, 'third batch');
    // a is still busy: e1, f1 go; a2 stays.
    assert.deepEqual(calls[2]?.items, ['e1', 'f1']);
    assert.equal(batcher.waiting, 1);
    finish(calls, 0);
    await until(() => calls.length === 4, 'fourth batch');
    assert.equal(batcher.waiting, 0);
    finish(calls, 2);
    finish(calls, 3);
    await Promise.all(all);
    assert.equal(batcher.waiting, 0);
  });
});

// ---------------------------------------------------------------------------
// createBatcher: property
// ---------------------------------------------------------------------------

describe('createBatcher: invariants under random workloads', () => {
  const KEYS = ['a', 'b', 'c', 'd', 'e'] as const;
  type Item = { id: number; key: string };
  type Batch = { no: number; ids: number[]; keys: string[]; start: number; end: number };

  const workload = fc.record({
    maxBatch: fc.integer({ min: 1, max: 5 }),
    maxConcurrent: fc.integer({ min: 1, max: 3 }),
    steps: fc.array(
      fc.record({
        key: fc.constantFrom(...KEYS),
        /** Turns to wait before submitting this item (0: same turn as the previous one). */
        gap: fc.constantFrom(0, 0, 0, 1, 2),
      }),
      { minLength: 1, maxLength: 30 },
    ),
    /** Turns each run call takes, consumed in call order (cycled). */
    durations: fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 10 }),
    /** Which run calls fail (cycled, like durations). */
    failures: fc.array(fc.boolean(), { minLength: 1, maxLength: 10 }),
  });

  test('own result exactly once, per-key order, key exclusivity, maxConcurrent, maxBatch', async () => {
    await fc.assert(
      fc.asyncProperty(workload, async ({ maxBatch, maxConcurrent, steps, durations, failures }) => {
        let clock = 0;
        let running = 0;
        let maxRunning = 0;
        const batches: Batch[] = [];
        const errors = new Map<number, Error>();

        const batcher = createBatcher<Item, string>({
          maxBatch,
          maxConcurrent,
          key: (item) => item.key,
          async run(items) {
            const batch: Batch = { no: batches.length, ids: items.map((i) => i.id), keys: items.map((i) => i.key), start: clock++, end: Infinity };
            batches.push(batch);
            running += 1;
            maxRunning = Math.max(maxRunning, running);
            await turns(durations[batch.no % durations.length] ?? 0);
            running -= 1;
            batch.end = clock++;
            if (failures[batch.no % failures.length] === true) {
              const error = new Error(`batch ${batch.no} failed`);
              errors.set(batch.no, error);
              throw error;
            }
            return items.map((item) => `r${item.id}`);
          },
        });

        const submissions: Array<{ item: Item; settled: Promise<PromiseSettledResult<string>> }> = [];
        const settleCounts = new Map<number, number>();
        for (const [id, step] of steps.entries()) {
          await turns(step.gap);
          const item: Item = { id, key: step.key };
          const promise = batcher.submit(item);
          const count = (): void => void settleCounts.set(id, (settleCounts.get(id) ?? 0) + 1);
          promise.then(count, count);
          submissions.push({ item, settled: Promise.allSettled([promise]).then(([r]) => r!) });
        }
        const outcomes = await Promise.all(submissions.map((s) => s.settled));
        await turn();

        // (a) every item ran in exactly one batch and settled exactly once, with its own result
        // (or with the error of its own batch).
        const batchOf = new Map<number, Batch>();
        for (const batch of batches) {
          for (const id of batch.ids) {
            assert.ok(!batchOf.has(id), `item ${id} ran twice`);
            batchOf.set(id, batch);
          }
        }
        assert.equal(batchOf.size, steps.length, 'every item ran');
        for (const [id, outcome] of outcomes.entries()) {
          assert.equal(settleCounts.get(id), 1, `item ${id} settled once`);
          const batch = batchOf.get(id)!;
          const error = errors.get(batch.no);
          if (error) assert.deepEqual(outcome, { status: 'rejected', reason: error });
          else assert.deepEqual(outcome, { status: 'fulfilled', value: `r${id}` });
        }
        assert.equal(batcher.waiting, 0);

        for (const batch of batches) {
          // (f) no batch bigger than maxBatch (and none empty).
          assert.ok(batch.ids.length >= 1 && batch.ids.length <= maxBatch, `batch ${batch.no} has ${batch.ids.length} items`);
          // (c) no key twice in one batch.
          assert.equal(new Set(batch.keys).size, batch.keys.length, `batch ${batch.no} repeats a key: ${batch.keys.join(',')}`);
          // Within a batch, items are in submission order.
          assert.deepEqual([...batch.ids].sort((x, y) => x - y), batch.ids);
        }

        // (d) batches sharing a key never overlap in time.
        for (const x of batches) {
          for (const y of batches) {
            if (x.no >= y.no) continue;
            const overlap = x.start < y.end && y.start < x.end;
            if (!overlap) continue;
            const shared = x.keys.filter((k) => y.keys.includes(k));
            assert.deepEqual(shared, [], `batches ${x.no} and ${y.no} overlap and share keys`);
          }
        }

        // (b) per key, items ran in submission order (batches of one key never overlap, so start order is run order).
        for (const key of KEYS) {
          const ran = batches
            .filter((b) => b.keys.includes(key))
            .sort((x, y) => x.start - y.start)
            .map((b) => b.ids[b.keys.indexOf(key)]!);
          const submitted = steps.flatMap((s, id) => (s.key === key ? [id] : []));
          assert.deepEqual(ran, submitted, `key ${key} ran out of order`);
        }

        // (e) never more than maxConcurrent batches at once, from the run side and from the recorded intervals.
        assert.ok(maxRunning <= maxConcurrent, `${maxRunning} batches ran at once, limit ${maxConcurrent}`);
        for (const batch of batches) {
          const atStart = batches.filter((other) => other.start <= batch.start && batch.start < other.end).length;
          assert.ok(atStart <= maxConcurrent, `${atStart} batches running when batch ${batch.no} started`);
        }
      }),
      { numRuns: 100 },
    );
  });
});

// ---------------------------------------------------------------------------
// createCoalescer
// ---------------------------------------------------------------------------

describe('createCoalescer', () => {
  function manualCoalescer(): { add(item: string): Observed<void>; flushes: Array<{ items: string[]; done: Deferred<void> }> } {
    const flushes: Array<{ items: string[]; done: Deferred<void> }> = [];
    const coalescer = createCoalescer<string>((items) => {
      const done = deferred<void>();
      flushes.push({ items: [...items], done });
      return done.promise;
    });
    return { add: (item) => observe(coalescer.add(item)), flushes };
  }

  test('adds in the same turn become one flush, with all items in order, on the next turn', async () => {
    const { add, flushes } = manualCoalescer();
    const adds = ['x', 'y', 'z'].map(add);
    assert.equal(flushes.length, 0, 'flush is not called synchronously');
    await turn();
    assert.deepEqual(flushes.map((f) => f.items), [['x', 'y', 'z']]);
    await turns(3);
    assert.ok(adds.every((a) => !a.settled), 'adds wait for their flush');
    flushes[0]?.done.resolve();
    await Promise.all(adds.map((a) => a.promise));
    assert.ok(adds.every((a) => a.fulfilled));
    assert.equal(flushes.length, 1);
  });

  test('adds in a later turn become another flush; each add resolves when its own flush finishes', async () => {
    const { add, flushes } = manualCoalescer();
    const first = ['a', 'b'].map(add);
    await turn();
    const second = ['c', 'd'].map(add);
    await turn();
    const third = [add('e')];
    await turn();
    assert.deepEqual(flushes.map((f) => f.items), [['a', 'b'], ['c', 'd'], ['e']]);

    flushes[1]?.done.resolve();
    await Promise.all(second.map((a) => a.promise));
    await turns(2);
    assert.ok(first.every((a) => !a.settled), 'first flush not done yet');
    assert.ok(third.every((a) => !a.settled), 'third flush not done yet');

    flushes[0]?.done.resolve();
    flushes[2]?.done.resolve();
    await Promise.all([...first, ...third].map((a) => a.promise));
    assert.equal(flushes.length, 3);
  });

  test('a rejecting flush rejects exactly its adds, with its error; other flushes are unaffected', async () => {
    const { add, flushes } = manualCoalescer();
    const first = ['a', 'b'].map(add);
    await turn();
    const second = ['c'].map(add);
    await turn();
    const boom = new Error('disk full');
    flushes[0]?.done.reject(boom);
    flushes[1]?.done.resolve();
    await Promise.allSettled([...first, ...second].map((a) => a.promise));
    assert.ok(first.every((a) => a.settled && !a.fulfilled && a.error === boom));
    assert.ok(second.every((a) => a.fulfilled));

    // The coalescer keeps working after a failure.
    const later = ['d', 'e'].map(add);
    await turn();
    assert.deepEqual(flushes[2]?.items, ['d', 'e']);
    flushes[2]?.done.resolve();
    await Promise.all(later.map((a) => a.promise));
  });

  test('a flush that answers one error per item fails exactly those adds', async () => {
    const coalescer = createCoalescer<string>(async (items) => items.map((item) => (item.startsWith('bad') ? new Error(`no ${item}`) : undefined)));
    const adds = ['a', 'bad1', 'b', 'bad2'].map((item) => observe(coalescer.add(item)));
    await Promise.allSettled(adds.map((a) => a.promise));
    assert.deepEqual(
      adds.map((a) => (a.fulfilled ? 'ok' : (a.error as Error).message)),
      ['ok', 'no bad1', 'ok', 'no bad2'],
    );
  });

  test('an add made while its turn is being flushed goes to the next flush, not a lost one', async () => {
    const flushed: string[][] = [];
    let extra: Promise<void> | undefined;
    const coalescer: Coalescer<string> = createCoalescer<string>(async (items) => {
      flushed.push([...items]);
      if (flushed.length === 1) extra = coalescer.add('inside');
    });
    await Promise.all([coalescer.add('a'), coalescer.add('b')]);
    assert.ok(extra);
    await extra;
    assert.deepEqual(flushed, [['a', 'b'], ['inside']]);
  });

  test('property: every add lands in exactly one flush, in order, grouped by the turn it was made in', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 25 }), async (gaps) => {
        const flushed: number[][] = [];
        const coalescer = createCoalescer<number>(async (items) => {
          flushed.push([...items]);
        });
        const expected: number[][] = [];
        const adds: Array<Promise<void>> = [];
        for (const [i, gap] of gaps.entries()) {
          if (gap > 0 || i === 0) {
            await turns(gap);
            expected.push([]);
          }
          expected[expected.length - 1]!.push(i);
          adds.push(coalescer.add(i));
        }
        await Promise.all(adds);
        assert.deepEqual(flushed, expected);
      }),
      { numRuns: 100 },
    );
  });
});

describe('bad options and misbehaving callbacks', () => {
  test('NaN or fractional sizes are refused (they would leave submits hanging)', () => {
    for (const bad of [Number.NaN, 1.5, 0.5]) {
      assert.throws(() => createBatcher({ maxBatch: bad, maxConcurrent: 1, key: String, run: async (items: readonly number[]) => items }), RangeError);
      assert.throws(() => createBatcher({ maxBatch: 1, maxConcurrent: bad, key: String, run: async (items: readonly number[]) => items }), RangeError);
    }
  });

  test('a run that answers something other than an array rejects its items instead of hanging', async () => {
    const batcher = createBatcher<number, number>({
      maxBatch: 4,
      maxConcurrent: 1,
      key: String,
      run: async () => undefined as unknown as number[],
    });
    await assert.rejects(batcher.submit(1), /0 results for 1 items/);
  });

  test('a coalescer flush that throws at once rejects its adds; later flushes still work', async () => {
    let calls = 0;
    const coalescer = createCoalescer<number>((items) => {
      calls += 1;
      if (calls === 1) throw new Error(`sync failure with ${items.length}`);
      return Promise.resolve();
    });
    await assert.rejects(Promise.all([coalescer.add(1), coalescer.add(2)]), /sync failure with 2/);
    await coalescer.add(3);
    assert.equal(calls, 2);
  });
});
