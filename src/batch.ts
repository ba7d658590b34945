/**
 * Group commit. Items submitted while the batcher is busy wait and go together in the next
 * batch: a busy service pays one transaction per batch instead of one per item, and a quiet
 * one pays nothing (there is no timer; an idle batcher starts on the next turn of the event
 * loop, with whatever arrived in that turn).
 *
 * Items with the same key never share a batch and never run in two batches at once; they
 * run in the order they were submitted. (For inbound messages the key is the sender: one
 * conversation row per batch, each person's messages in order.)
 */
export type Batcher<I, O> = {
  /** Resolves with this item's result, or rejects with its batch's error. */
  submit(item: I): Promise<O>;
  /** Items waiting for a batch (not counting the ones running). */
  readonly waiting: number;
};

export type BatcherOptions<I, O> = {
  /** Most items in one batch. */
  maxBatch: number;
  /** Most batches running at once. */
  maxConcurrent: number;
  /**
   * When every running batch has been running this long (stuck on a lock, say), one more may
   * start beyond maxConcurrent, so the items behind them are not held up too. Unset: never.
   */
  spareAfterMs?: number;
  key(item: I): string;
  /** Runs one batch; answers one result per item, in the items' order. */
  run(items: readonly I[]): Promise<readonly O[]>;
};

type Waiting<I, O> = { item: I; key: string; resolve(result: O): void; reject(error: unknown): void };

export function createBatcher<I, O>(options: BatcherOptions<I, O>): Batcher<I, O> {
  if (!Number.isInteger(options.maxBatch) || !Number.isInteger(options.maxConcurrent) || options.maxBatch < 1 || options.maxConcurrent < 1) {
    throw new RangeError('maxBatch and maxConcurrent must be whole numbers of at least 1');
  }
  const queue: Array<Waiting<I, O>> = [];
  const busyKeys = new Set<string>();
  /** When each running batch started (performance.now()). */
  const running = new Set<{ startedAt: number }>();
  let scheduled = false;
  let spareTimer: NodeJS.Timeout | undefined;

  /** How many batches may run now: one more than maxConcurrent while all of them are slow. */
  function limit(): number {
    const after = options.spareAfterMs;
    if (after === undefined || running.size < options.maxConcurrent) return options.maxConcurrent;
    const now = performance.now();
    return [...running].every((batch) => now - batch.startedAt >= after) ? options.maxConcurrent + 1 : options.maxConcurrent;
  }

  /**
   * Items wait while every slot is taken: look again when the running batches would count as
   * slow. `spareSeen`: the pump that just ran had the spare slot to give.
   */
  function watchForSpare(spareSeen: boolean): void {
    const after = options.spareAfterMs;
    if (after === undefined || spareTimer !== undefined || queue.length === 0 || running.size !== options.maxConcurrent) return;
    const latest = Math.max(...[...running].map((batch) => batch.startedAt));
    const wait = latest + after - performance.now();
    if (wait <= 0) {
      // Due since the pump looked: look again. Already allowed when it looked, and nothing
      // waiting could go in it (every key busy): no timer, or it would fire, find the same and
      // set another, about 1,000 a second. A batch ending or an item arriving looks again.
      if (!spareSeen) schedule();
      return;
    }
    spareTimer = setTimeout(() => {
      spareTimer = undefined;
      schedule();
    }, wait);
    spareTimer.unref();
  }

  /** The next batch: oldest first, skipping keys that are busy or already taken (they keep their place). */
  function take(): Array<Waiting<I, O>> {
    const batch: Array<Waiting<I, O>> = [];
    const taken = new Set<string>();
    let i = 0;
    while (i < queue.length && batch.length < options.maxBatch) {
      const waiting = queue[i]!;
      // A busy or taken key is skipped, and so are all its later items: they keep their order.
      if (busyKeys.has(waiting.key) || taken.has(waiting.key)) {
        i += 1;
        continue;
      }
      taken.add(waiting.key);
      batch.push(waiting);
      queue.splice(i, 1);
    }
    return batch;
  }

  function pump(): void {
    scheduled = false;
    let allowed = limit();
    while (running.size < allowed && queue.length > 0) {
      const batch = take();
      if (batch.length === 0) break;
      const started = { startedAt: performance.now() };
      running.add(started);
      for (const waiting of batch) busyKeys.add(waiting.key);
      const settle = (): void => {
        running.delete(started);
        for (const waiting of batch) busyKeys.delete(waiting.key);
        schedule();
      };
      let results: Promise<readonly O[]>;
      try {
        results = options.run(batch.map((waiting) => waiting.item));
      } catch (error) {
        results = Promise.reject(error);
      }
      results.then(
        (out) => {
          settle();
          const answered = Array.isArray(out) ? out.length : 0;
          batch.forEach((waiting, index) => {
            if (index < answered) waiting.resolve(out[index]!);
            else waiting.reject(new Error(`batch answered ${answered} results for ${batch.length} items`));
          });
        },
        (error: unknown) => {
          settle();
          for (const waiting of batch) waiting.reject(error);
        },
      );
      allowed = limit();
    }
    watchForSpare(allowed > options.maxConcurrent);
  }

  function schedule(): void {
    if (scheduled || queue.length === 0) return;
    scheduled = true;
    setImmediate(pump);
  }

  return {
    submit(item) {
      return new Promise<O>((resolve, reject) => {
        queue.push({ item, key: options.key(item), resolve, reject });
        schedule();
      });
    },
    get waiting() {
      return queue.length;
    },
  };
}

/**
 * Write coalescing: items added in the same turn of the event loop are flushed together;
 * each `add` resolves when the flush holding its item has finished (or rejects with its error).
 * A flush may answer one entry per item (an Error, or undefined for success) to fail only some.
 */
export type Coalescer<T> = { add(item: T): Promise<void> };

export function createCoalescer<T>(flush: (items: readonly T[]) => Promise<void | ReadonlyArray<Error | undefined>>): Coalescer<T> {
  let pending: Array<{ item: T; resolve(): void; reject(error: unknown): void }> = [];
  return {
    add(item) {
      return new Promise<void>((resolve, reject) => {
        pending.push({ item, resolve, reject });
        if (pending.length > 1) return;
        setImmediate(() => {
          const batch = pending;
          pending = [];
          // A flush that throws at once is a failed flush like any other.
          Promise.resolve()
            .then(() => flush(batch.map((entry) => entry.item)))
            .then(
              (errors) =>
                batch.forEach((entry, index) => {
                  const error = errors?.[index];
                  if (error === undefined) entry.resolve();
                  else entry.reject(error);
                }),
              (error: unknown) => batch.forEach((entry) => entry.reject(error)),
            );
        });
      });
    },
  };
}
