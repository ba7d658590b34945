/**
 * The pace of WhatsApp sends (src/delivery/pace.ts): pure but for a clock and a timer, which
 * the test drives (timers fire when the test moves the clock, late by as much as it says).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { SLOW_FOR_MS, SPREAD_MS, createSendPace, type PaceClock } from '../src/delivery/pace.js';

/** A clock the test moves; a timer fires at its time plus `lateness` (a busy event loop). */
function manualClock(lateness = () => 0) {
  let t = 1_000;
  const timers: Array<{ at: number; callback: () => void }> = [];
  const clock: PaceClock = { now: () => t, setTimer: (callback, ms) => void timers.push({ at: t + ms + lateness(), callback }) };
  return {
    clock,
    now: () => t,
    /** Moves the clock to `to`, firing the timers due by then in time order (and any they set). */
    async runUntil(to: number) {
      for (;;) {
        timers.sort((a, b) => a.at - b.at);
        const first = timers[0];
        if (first === undefined || first.at > to) break;
        timers.shift();
        t = Math.max(t, first.at);
        first.callback();
        await Promise.resolve();
      }
      t = Math.max(t, to);
    },
  };
}

/** Takes a slot and records when the send actually goes (now, or when its turn resolves). */
function sender(pace: ReturnType<typeof createSendPace>, now: () => number, starts: number[]) {
  return (maxWaitMs: number): boolean => {
    const slot = pace.take(maxWaitMs);
    if (slot === false) return false;
    if (slot === true) starts.push(now());
    else
      void slot.then((go) => {
        if (go) starts.push(now());
      });
    return true;
  };
}

describe('send pace', () => {
  test('the first goes now, the next each one interval after the one before, in the order they asked', async () => {
    const m = manualClock();
    const pace = createSendPace(80, m.clock);
    const starts: number[] = [];
    const send = sender(pace, m.now, starts);
    for (let i = 0; i < 5; i += 1) assert.equal(send(10_000), true);
    assert.equal(pace.backlogMs(), 62.5, 'a sixth would go after the four queued: 5 x 12.5 ms');
    await m.runUntil(2_000);
    assert.deepEqual(starts, [1_000, 1_012.5, 1_025, 1_037.5, 1_050]);
    assert.equal(pace.backlogMs(), 0);
  });

  test('a send that would wait longer than it may is not queued, and takes nothing from the others', async () => {
    const m = manualClock();
    const pace = createSendPace(2, m.clock);
    assert.equal(pace.take(100), true);
    assert.equal(pace.take(100), false, '500 ms away');
    assert.equal(pace.take(100), false);
    const turn = pace.take(1_000);
    assert.ok(turn instanceof Promise);
    assert.equal(pace.take(600), false, 'behind the queued one: 1,000 ms away');
    assert.equal(pace.backlogMs(), 1_000);
  });

  test('an idle pace saves up no burst: after a long pause one goes now, the next an interval later', async () => {
    const m = manualClock();
    const pace = createSendPace(10, m.clock);
    assert.equal(pace.take(0), true);
    await m.runUntil(60_000);
    assert.equal(pace.take(0), true);
    assert.equal(pace.take(0), false);
    assert.ok(pace.take(100) instanceof Promise);
  });

  test('a late timer does not bunch sends: each goes a whole interval after the one before it went', async () => {
    const m = manualClock(() => 30);
    const pace = createSendPace(20, m.clock);
    const starts: number[] = [];
    const send = sender(pace, m.now, starts);
    for (let i = 0; i < 6; i += 1) send(10_000);
    await m.runUntil(5_000);
    assert.equal(starts.length, 6);
    for (let i = 1; i < starts.length; i += 1) assert.ok(starts[i]! - starts[i - 1]! >= 50, `${starts}`);
  });

  test('Meta says too fast: the rate halves, at most once a second, never below 1 a second, and comes back after a quiet minute', async () => {
    const m = manualClock();
    const pace = createSendPace(20, m.clock);
    const starts: number[] = [];
    const send = sender(pace, m.now, starts);
    assert.equal(pace.slowDown(), true);
    assert.equal(pace.slowDown(), false, 'a burst of refusals halves once');
    assert.equal(pace.rate(), 10);
    for (let i = 0; i < 3; i += 1) send(10_000);
    await m.runUntil(m.now() + 1_000);
    assert.deepEqual(starts.map((t, i) => (i === 0 ? 0 : t - starts[i - 1]!)), [0, 100, 100]);
    assert.equal(pace.slowDown(), true);
    assert.equal(pace.rate(), 5);
    for (let i = 0; i < 10; i += 1) {
      await m.runUntil(m.now() + 1_000);
      pace.slowDown();
    }
    assert.equal(pace.rate(), 1, 'the floor');
    await m.runUntil(m.now() + SLOW_FOR_MS - 1);
    assert.equal(pace.rate(), 1, 'still slow just before a quiet minute');
    await m.runUntil(m.now() + 1);
    assert.equal(pace.rate(), 20, 'back to the configured rate');
    assert.equal(createSendPace(0).slowDown(), false, 'pacing off stays off');
  });

  test('a slow-down puts back the queued sends the slower rate would keep past the wait they allowed', async () => {
    const m = manualClock();
    const pace = createSendPace(20, m.clock);
    assert.equal(pace.take(500), true);
    const queued = Array.from({ length: 9 }, () => pace.take(500));
    assert.ok(queued.every((turn) => turn instanceof Promise), 'at 50 ms apart all nine fit in 500 ms');
    const answers: Array<boolean | undefined> = queued.map(() => undefined);
    queued.forEach((turn, i) => void (turn as Promise<boolean>).then((go) => (answers[i] = go)));
    assert.equal(pace.slowDown(), true);
    await Promise.resolve();
    // At 100 ms apart the first five still go within 500 ms (at 100, 200, 300, 400, 500); the rest are put back.
    assert.deepEqual(answers, [undefined, undefined, undefined, undefined, undefined, false, false, false, false]);
    await m.runUntil(m.now() + 1_000);
    assert.deepEqual(answers, [true, true, true, true, true, false, false, false, false]);
  });

  test('sends put back come back one turn apart, not all at once', () => {
    const m = manualClock();
    const pace = createSendPace(10, m.clock);
    pace.take(0);
    assert.deepEqual([pace.laterTurnMs(), pace.laterTurnMs(), pace.laterTurnMs()], [200, 300, 400]);
    assert.equal(createSendPace(0).laterTurnMs(), 0);
    // Put back again and again (or at a slowed rate), never further than SPREAD_MS past the queue's end.
    const slow = createSendPace(1, m.clock);
    slow.take(0);
    const turns = Array.from({ length: 500 }, () => slow.laterTurnMs());
    assert.equal(Math.max(...turns), 1_000 + SPREAD_MS);
  });

  test('closing (shutdown) answers every queued send false at once, and every later take', async () => {
    const m = manualClock();
    const pace = createSendPace(10, m.clock);
    assert.equal(pace.take(10_000), true);
    const queued = [pace.take(10_000), pace.take(10_000)];
    assert.ok(queued.every((turn) => turn instanceof Promise));
    pace.close();
    assert.deepEqual(await Promise.all(queued), [false, false]);
    assert.equal(pace.take(10_000), false);
    await m.runUntil(m.now() + 10_000);
    assert.equal(pace.backlogMs(), 0);
  });

  test('0 means no pacing; a negative or non-finite rate is refused', () => {
    const pace = createSendPace(0);
    for (let i = 0; i < 1_000; i += 1) assert.equal(pace.take(0), true);
    assert.equal(pace.backlogMs(), 0);
    assert.throws(() => createSendPace(-1), RangeError);
    assert.throws(() => createSendPace(Number.NaN), RangeError);
  });

  test('with slow-downs among the arrivals, every send taken goes (or is put back) within the wait it allowed, never closer than the interval (fast-check)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 50 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 3_000 }), fc.boolean()), { minLength: 1, maxLength: 120 }),
        async (perSecond, arrivals) => {
          const m = manualClock();
          const pace = createSendPace(perSecond, m.clock);
          const starts: number[] = [];
          const settled: Promise<void>[] = [];
          for (const [gap, maxWait, slow] of arrivals) {
            await m.runUntil(m.now() + gap);
            if (slow) pace.slowDown();
            const askedAt = m.now();
            const slot = pace.take(maxWait);
            if (slot === true) starts.push(askedAt);
            else if (slot !== false)
              settled.push(
                slot.then((go) => {
                  if (!go) return;
                  assert.ok(m.now() <= askedAt + maxWait + 1e-9, `went at ${m.now()}, allowed until ${askedAt + maxWait}`);
                  starts.push(m.now());
                }),
              );
          }
          await m.runUntil(m.now() + 10_000_000);
          await Promise.all(settled);
          for (let i = 1; i < starts.length; i += 1) assert.ok(starts[i]! - starts[i - 1]! >= 1000 / perSecond - 1e-9);
        },
      ),
      { numRuns: 200 },
    );
  });

  test('never more than perSecond sends start within any one second, whatever the arrivals, waits and timer lateness (fast-check)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 50 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 3_000 })), { minLength: 1, maxLength: 120 }),
        fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 10 }),
        async (perSecond, arrivals, latenesses) => {
          let k = 0;
          const m = manualClock(() => latenesses[(k += 1) % latenesses.length]!);
          const pace = createSendPace(perSecond, m.clock);
          const starts: number[] = [];
          const send = sender(pace, m.now, starts);
          let queued = 0;
          for (const [gap, maxWait] of arrivals) {
            await m.runUntil(m.now() + gap);
            if (send(maxWait)) queued += 1;
          }
          await m.runUntil(m.now() + 10_000_000);
          assert.equal(starts.length, queued, 'every send taken goes');
          for (let i = 1; i < starts.length; i += 1) assert.ok(starts[i]! - starts[i - 1]! >= 1000 / perSecond - 1e-9, `${perSecond}/s: ${starts[i - 1]} -> ${starts[i]}`);
        },
      ),
      { numRuns: 200 },
    );
  });
});
