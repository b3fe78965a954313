// One WebSocket at a time, replaced whenever it ends: a token fetched for every attempt,
// full-jitter backoff between attempts, and giving up after too many closes before open.
// API Gateway's 1001 is a renewal instead: the next socket at once, and no state change
// unless it fails. What travels on the socket is the client's business.

import { fullJitter } from './backoff.js';

/** API Gateway's "going away": the 10-minute idle close and the 2-hour limit. Nothing is
 * wrong, so the next connection is opened at once, and silently: a UI showing the
 * connection's state must not flicker for what is routine (the renewal shows only if the
 * next attempt fails). */
const GOING_AWAY = 1001;
/** The close code given to a connection declared dead (no pong, no reply). */
const DEAD = 4000;

function withToken(url, token) {
  const parsed = new URL(url);
  if (token !== undefined && token !== null && token !== '') {
    parsed.searchParams.set('token', String(token));
  }
  return parsed.toString();
}

export class Connection {
  #options;
  #WebSocket;
  #hooks;
  #socket = null;
  #opened = false;
  #everOpened = false;
  #attempt = 0;
  #refusals = 0;
  /** Bumped by every new attempt and by stop(): an attempt still awaiting its token when
   * a newer one started (or the client closed) must not open a socket. */
  #generation = 0;
  #reconnectTimer;
  #stopped = false;
  #gaveUp = false;

  /**
   * @param {object} options the client's options (url, token, backoff, refusals)
   * @param {Function} WebSocket the WebSocket constructor
   * @param {object} hooks
   * @param {(reconnected: boolean) => void} hooks.open a socket opened
   * @param {(data: string) => void} hooks.frame a frame arrived
   * @param {() => void} hooks.down the socket is gone (closed, failed or abandoned)
   * @param {(refusals: number) => void} hooks.gaveUp too many closes before open
   * @param {(state: string, detail: object) => void} hooks.state a state change
   * @param {(name: string, payload: object) => void} hooks.event an event for the app
   */
  constructor(options, WebSocket, hooks) {
    this.#options = options;
    this.#WebSocket = WebSocket;
    this.#hooks = hooks;
  }

  get isOpen() {
    return this.#socket !== null && this.#opened;
  }

  get gaveUp() {
    return this.#gaveUp;
  }

  start() {
    this.#connect();
  }

  /** Sends a text frame; false when there is no open socket to take it. */
  send(text) {
    if (!this.isOpen) return false;
    try {
      this.#socket.send(text);
      return true;
    } catch {
      // Closing: its close event follows.
      return false;
    }
  }

  /** Connects now: after giving up, or to skip a backoff wait. */
  reconnect() {
    if (this.#stopped || this.#socket) return;
    clearTimeout(this.#reconnectTimer);
    this.#gaveUp = false;
    this.#refusals = 0;
    this.#attempt = 0;
    this.#hooks.state('reconnecting', { delayMs: 0 });
    this.#connect();
  }

  /** Stops for good: no further attempt. */
  stop() {
    this.#stopped = true;
    this.#generation += 1;
    clearTimeout(this.#reconnectTimer);
    this.#abandon(1000, 'client closed');
  }

  /** No pong, no reply, or a server saying the connection is no longer registered: drop
   * the socket without waiting for its close event (a dead connection may take minutes to
   * report one) and reconnect. */
  declareDead(reason) {
    if (this.#stopped || !this.#socket) return;
    const opened = this.#abandon(DEAD, reason);
    this.#retryLater({ code: DEAD, reason, opened, refused: false });
  }

  async #connect() {
    this.#reconnectTimer = undefined;
    const generation = ++this.#generation;
    const current = () => generation === this.#generation && !this.#stopped;
    let token;
    try {
      const source = this.#options.token;
      token = typeof source === 'function' ? await source() : source;
    } catch (error) {
      if (!current()) return;
      this.#hooks.event('error', error);
      this.#retryLater({ code: null, reason: 'the token function failed', opened: false, refused: false });
      return;
    }
    if (!current()) return;
    let socket;
    try {
      socket = new this.#WebSocket(withToken(this.#options.url, token));
    } catch (error) {
      this.#hooks.event('error', error);
      this.#retryLater({ code: null, reason: String(error?.message ?? error), opened: false, refused: false });
      return;
    }
    this.#socket = socket;
    this.#opened = false;
    socket.onopen = () => this.#onOpen(socket);
    socket.onmessage = (event) => {
      if (socket === this.#socket) this.#hooks.frame(event.data);
    };
    socket.onclose = (event) => this.#onClose(socket, event.code, event.reason);
    // Browsers follow an error with a close event, but some runtimes (Node 20's WebSocket
    // after a refused handshake) never do: an error ends the socket here, as 1006 would.
    socket.onerror = () => {
      if (socket !== this.#socket) return;
      const opened = this.#abandon(1000, 'error');
      this.#retryLater({ code: 1006, reason: 'connection failed', opened, refused: !opened });
    };
  }

  #onOpen(socket) {
    if (socket !== this.#socket) return;
    this.#opened = true;
    const reconnected = this.#everOpened;
    this.#everOpened = true;
    this.#attempt = 0;
    this.#refusals = 0;
    this.#hooks.open(reconnected);
  }

  #onClose(socket, code, reason) {
    if (socket !== this.#socket) return;
    const opened = this.#opened;
    this.#socket = null;
    this.#opened = false;
    this.#hooks.down();
    if (this.#stopped) return;
    this.#retryLater({ code, reason, opened, refused: !opened });
  }

  /** Closes the current socket, ignoring whatever it reports afterwards; returns whether
   * it had opened. */
  #abandon(code, reason) {
    const socket = this.#socket;
    if (!socket) return false;
    const opened = this.#opened;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      socket.close(code, reason);
    } catch {
      // Already closing.
    }
    this.#socket = null;
    this.#opened = false;
    this.#hooks.down();
    return opened;
  }

  #retryLater({ code, reason, opened, refused }) {
    if (refused) {
      // Browsers do not show a refused handshake's HTTP status: a close before open is all
      // there is, so every one counts as a possible refusal (401: a fresh token is fetched
      // for the next attempt).
      this.#refusals += 1;
      if (this.#refusals >= this.#options.maxHandshakeRefusals) {
        this.#giveUp(code, reason);
        return;
      }
    }
    const renewal = opened && code === GOING_AWAY;
    const delayMs = renewal
      ? 0
      : fullJitter(this.#attempt++, {
          baseMs: this.#options.reconnectBaseMs,
          maxMs: this.#options.reconnectMaxMs,
          random: this.#options.random,
        });
    this.#hooks.event('disconnect', { code, reason, opened, delayMs, refusals: this.#refusals });
    // A renewal changes no state: the client's state stays 'open' and requests wait for
    // the new socket. If it fails, the state says so from then on, as for any other drop.
    if (!renewal) this.#hooks.state('reconnecting', { code, reason, delayMs });
    this.#reconnectTimer = setTimeout(() => this.#connect(), delayMs);
  }

  #giveUp(code, reason) {
    this.#gaveUp = true;
    const refusals = this.#refusals;
    this.#hooks.gaveUp(refusals);
    this.#hooks.event('disconnect', { code, reason, opened: false, delayMs: null, refusals });
    this.#hooks.state('closed', { reason: 'handshake_refused', refusals });
    this.#hooks.event('closed', { reason: 'handshake_refused', refusals });
  }
}
