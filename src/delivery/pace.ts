/**
 * The pace of WhatsApp sends from this process. Meta takes about 80 messages a second per
 * business number (raised to 1,000 on request) and refuses the rest with 130429: a burst of
 * reminders or receipts above that came back limited, each refusal spent one of a message's
 * tries, and a message that ran out of tries went by paid SMS. So sends are let go one at a
 * time, in the order they asked, each at least 1/perSecond after the one before (measured
 * when it is let go, so a late timer never bunches two together): never more than `perSecond`
 * start in any one second.
 *
 * A send that would wait longer than the caller allows is not queued: `take` answers false and
 * the caller puts the message back for later (the outbox does, without counting a try), so no
 * claim is held for long. The clock and the timer are passed in (tests drive them).
 *
 * When Meta says too fast anyway (several machines each at the full rate, a lower tier than
 * configured), `slowDown` halves this process's rate, at most once a second and never below one
 * send a second, until a minute passes without another such answer: the machines then share the
 * number's throughput without being told how many they are.
 */

export type SendPace = {
  /**
   * true: go now. A promise: queued; go when it resolves true (false: the pace was closed
   * meanwhile, do not send). false: the wait would be longer than `maxWaitMs`, or the pace is
   * closed; nothing queued.
   */
  take(maxWaitMs: number): boolean | Promise<boolean>;
  /** Shutdown: every send still queued is answered false at once, and so is every later take. */
  close(): void;
  /** How long from now until a send asking now would go (ms): the queue ahead and the gap. */
  backlogMs(): number;
  /**
   * For a send put back (take answered false): how long from now its turn might come (ms), each
   * call a turn later than the one before, so the sends put back together come back spread at
   * the rate instead of all at once, but never more than SPREAD_MS past the queue's end. No turn
   * is taken.
   */
  laterTurnMs(): number;
  /**
   * Meta refused a send as too fast (130429): halve the rate for a while (see above). The sends
   * queued that the slower rate would keep past the wait they allowed are answered false (put
   * back), so none waits longer than it asked to. False: it was halved less than a second ago,
   * or pacing is off.
   */
  slowDown(): boolean;
  /** The rate now (sends a second). */
  rate(): number;
};

/** A slowed pace goes back to the configured rate after this long without another refusal. */
export const SLOW_FOR_MS = 60_000;
/** The furthest past the queue's end that laterTurnMs spreads the sends put back. */
export const SPREAD_MS = 60_000;

export type PaceClock = { now(): number; setTimer(callback: () => void, ms: number): void };

const realClock: PaceClock = { now: () => performance.now(), setTimer: (callback, ms) => void setTimeout(callback, ms) };

/** `perSecond` 0: no pacing (every take answers true). */
export function createSendPace(perSecond: number, clock: PaceClock = realClock): SendPace {
  if (!Number.isFinite(perSecond) || perSecond < 0) throw new RangeError(`sends per second must be 0 or more, got ${perSecond}`);
  if (perSecond === 0) return { take: () => true, close: () => undefined, backlogMs: () => 0, laterTurnMs: () => 0, slowDown: () => false, rate: () => 0 };
  /** The rate now: halved by slowDown, the configured one again SLOW_FOR_MS after the last. */
  let current = perSecond;
  let slowedAt = Number.NEGATIVE_INFINITY;
  const rateAt = (at: number) => {
    if (current !== perSecond && at - slowedAt >= SLOW_FOR_MS) current = perSecond;
    return current;
  };
  const intervalAt = (at: number) => 1000 / rateAt(at);
  /** When the last send was let go. */
  let last = Number.NEGATIVE_INFINITY;
  /** Sends waiting, first in line first, each with the latest time it agreed to go by. */
  const queue: Array<{ answer: (go: boolean) => void; by: number }> = [];
  let timerSet = false;
  let closed = false;
  /** The latest turn handed to a send put back (laterTurnMs). */
  let horizon = Number.NEGATIVE_INFINITY;

  const gapLeft = (at: number) => Math.max(0, last + intervalAt(at) - at);
  /** How long from `at` until a send asking then would go: the gap, then the queue ahead. */
  const backlogAt = (at: number) => gapLeft(at) + queue.length * intervalAt(at);

  function schedule(): void {
    if (timerSet || queue.length === 0) return;
    timerSet = true;
    clock.setTimer(release, gapLeft(clock.now()));
  }

  /** Lets the first in line go if its gap has passed, then waits for the next one's. */
  function release(): void {
    timerSet = false;
    const at = clock.now();
    if (queue.length > 0 && gapLeft(at) === 0) {
      last = at;
      queue.shift()!.answer(true);
    }
    schedule();
  }

  return {
    take(maxWaitMs) {
      if (closed) return false;
      const at = clock.now();
      if (queue.length === 0 && gapLeft(at) === 0) {
        last = at;
        return true;
      }
      if (backlogAt(at) > maxWaitMs) return false;
      const turn = new Promise<boolean>((resolve) => queue.push({ answer: resolve, by: at + maxWaitMs }));
      schedule();
      return turn;
    },
    close() {
      closed = true;
      for (const { answer } of queue.splice(0)) answer(false);
    },
    backlogMs: () => backlogAt(clock.now()),
    laterTurnMs() {
      const at = clock.now();
      const end = at + backlogAt(at);
      // Never further than SPREAD_MS past the queue's end: the same message put back again and
      // again, or turns handed out at a slowed rate, must not push every later one minutes away.
      horizon = Math.min(Math.max(horizon, end) + intervalAt(at), end + SPREAD_MS);
      return horizon - at;
    },
    slowDown() {
      const at = clock.now();
      if (at - slowedAt < 1_000) return false;
      current = Math.max(1, rateAt(at) / 2);
      slowedAt = at;
      // At the slower rate, those that would go after the time they agreed to are put back.
      const kept: typeof queue = [];
      for (const waiting of queue) {
        if (at + gapLeft(at) + kept.length * intervalAt(at) > waiting.by) waiting.answer(false);
        else kept.push(waiting);
      }
      queue.splice(0, queue.length, ...kept);
      return true;
    },
    rate: () => rateAt(clock.now()),
  };
}
