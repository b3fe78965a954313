// Waiting for things in tests, always bounded by PATIENCE_MS: a test that waits fails with
// a message instead of hanging, and nothing asserts how fast anything was.

import { PATIENCE_MS } from './gateway.mjs';

/** Resolves with the next `event` of `client` whose payload passes `accept`. */
export function nextEvent(client, event, accept = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} event within ${PATIENCE_MS} ms`));
    }, PATIENCE_MS);
    const off = client.on(event, (payload) => {
      if (!accept(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}

/** Polls `check` every `everyMs` until it returns a truthy value, which it resolves with;
 * `patienceMs` for what the gateway is configured to make happen later than PATIENCE_MS. */
export async function eventually(check, what = 'a condition', { patienceMs = PATIENCE_MS, everyMs = 20 } = {}) {
  const deadline = Date.now() + patienceMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${patienceMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** `promise`, or a failure naming `what` when it has not settled within PATIENCE_MS (a
 * promise that never settles is the defect some tests are about). */
export function settled(promise, what) {
  let timer;
  const bound = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${PATIENCE_MS} ms`)), PATIENCE_MS);
  });
  return Promise.race([promise, bound]).finally(() => clearTimeout(timer));
}

/** A promise with its resolve function: a gate a test opens when it is ready. */
export function gate() {
  let open;
  const opened = new Promise((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
