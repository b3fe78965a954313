// Typed rejections: every failed request rejects with a WsBridgeError whose `code` is the
// server's `error` (forbidden, invalid_message, rate_limited, …) or one of the client's own
// codes below, so callers branch on a stable string instead of parsing messages.

/** Codes the client itself produces (the server's codes are in README "Errors"). */
export const CLIENT_ERROR_CODES = Object.freeze([
  // The connection ended while the request was in flight; a publish may or may not have
  // gone out, so it is not re-sent behind the app's back.
  'connection_lost',
  // No reply within `requestTimeoutMs`.
  'timeout',
  // `close()` was called, or had been, before the reply.
  'closed',
  // The client gave up after `maxHandshakeRefusals` refused handshakes in a row.
  'handshake_refused',
]);

export class WsBridgeError extends Error {
  /**
   * @param {string} code the server's `error` code or a client code
   * @param {string} details what went wrong, as the server explained it
   * @param {object} [frame] the server's error frame, when there was one
   */
  constructor(code, details, frame) {
    super(`${code}: ${details}`);
    this.name = 'WsBridgeError';
    this.code = code;
    this.details = details;
    this.frame = frame;
    // Only with rate_limited: milliseconds until the server accepts a frame again.
    this.retryAfterMs = frame?.retry_after_ms;
  }
}
