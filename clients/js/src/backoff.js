// Reconnect delays: "full jitter" exponential backoff. Each delay is uniformly random in
// [0, min(max, base * 2^attempt)], which spreads a crowd of clients dropped at once (a
// deploy, a network blip) instead of having them reconnect in lockstep.

/**
 * @param {number} attempt 0 for the first retry after a drop
 * @param {{baseMs: number, maxMs: number, random?: () => number}} options
 * @returns {number} milliseconds to wait
 */
export function fullJitter(attempt, { baseMs, maxMs, random = Math.random }) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
