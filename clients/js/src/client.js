// The wsbridge client: one connection to the bridge, kept open (connection.js), with
// keepalive pings, subscriptions restored after every reconnect without losing or repeating
// a message (streams.js), and a promise for every request (requests.js).

import { Connection } from './connection.js';
import { Emitter } from './emitter.js';
import { WsBridgeError } from './errors.js';
import { Requests } from './requests.js';
import { Streams } from './streams.js';
import { TopicListeners } from './topics.js';

export const DEFAULTS = Object.freeze({
  reconnectBaseMs: 500,
  reconnectMaxMs: 30_000,
  maxHandshakeRefusals: 8,
  // API Gateway closes a connection idle for 10 minutes: ping well inside that.
  keepaliveMs: 5 * 60_000,
  pongTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  rateLimitRetries: 3,
  idMemory: 1_000,
});

/** Codes after which the connection itself is suspect: reconnecting is the cure. */
const CONNECTION_ERRORS = new Set(['not_connected', 'internal_error']);

/** Creates a client and starts connecting. */
export function connect(options) {
  return new WsBridgeClient(options);
}

function topicList(topics) {
  const list = typeof topics === 'string' ? [topics] : Array.isArray(topics) ? [...topics] : [];
  if (list.length === 0 || !list.every((t) => typeof t === 'string' && t.length > 0)) {
    throw new TypeError('topics must be a topic name or a non-empty array of them');
  }
  return list;
}

function withoutRef(frame) {
  const { ref: _ref, ...reply } = frame;
  return reply;
}

function isJoinOrLeave(message) {
  return (
    (message?.event === 'join' || message?.event === 'leave') &&
    typeof message.topic === 'string' &&
    typeof message.data?.user_id === 'string' &&
    message.from === undefined
  );
}

export class WsBridgeClient {
  #options;
  #connection;
  #events = new Emitter();
  #listeners = new TopicListeners();
  #requests = new Requests();
  #streams;
  /** topic or pattern → 'pending' (asked, not yet confirmed) or 'active'. Only active
   * ones are restored by a reconnect; pending ones are re-sent as the request they are. */
  #subscriptions = new Map();
  #state = 'connecting';
  #keepaliveTimer;
  #closed = false;

  constructor(options) {
    if (!options || typeof options.url !== 'string') throw new TypeError('connect needs { url }');
    const token = options.token;
    if (token !== undefined && typeof token !== 'string' && typeof token !== 'function') {
      throw new TypeError('token must be a string or a function returning one (or a promise of one)');
    }
    this.#options = { ...DEFAULTS, ...options };
    const WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocket !== 'function') {
      throw new TypeError(
        'no WebSocket: run in a browser or Node 22+, start Node 20 with --experimental-websocket, or pass { WebSocket }',
      );
    }
    this.#streams = new Streams({
      idMemory: this.#options.idMemory,
      deliver: (message) => this.#dispatch(message),
      catchUp: (topic, since) => this.#catchUp(topic, since),
      events: (name, payload) => this.#events.emit(name, payload),
    });
    this.#connection = new Connection(this.#options, WebSocket, {
      open: (reconnected) => this.#onOpen(reconnected),
      frame: (data) => this.#onFrame(data),
      down: () => this.#teardown(),
      gaveUp: (refusals) =>
        this.#requests.rejectAll('handshake_refused', `${refusals} handshakes in a row were refused or failed`),
      state: (state, detail) => this.#setState(state, detail),
      event: (name, payload) => this.#events.emit(name, payload),
    });
    // Started after the caller had a chance to add listeners.
    queueMicrotask(() => {
      if (this.#closed) return;
      this.#events.emit('state', { state: 'connecting', previous: null });
      this.#connection.start();
    });
  }

  /** 'connecting' | 'open' | 'reconnecting' | 'closed' */
  get state() {
    return this.#state;
  }

  /** Adds an event listener; returns a function removing it. */
  on(event, listener) {
    return this.#events.on(event, listener);
  }

  off(event, listener) {
    this.#events.off(event, listener);
  }

  /** Resolves when the connection is next open (at once if it is); rejects if the client
   * closes or gives up first, or already has (nothing would open it but `reconnect()`). */
  opened() {
    if (this.#closed) return Promise.reject(new WsBridgeError('closed', 'close() was called'));
    if (this.#connection.gaveUp) {
      return Promise.reject(new WsBridgeError('handshake_refused', 'the client gave up: call reconnect()'));
    }
    if (this.#state === 'open') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const offs = [
        this.on('open', () => {
          offs.forEach((off) => off());
          resolve();
        }),
        this.on('closed', (event) => {
          offs.forEach((off) => off());
          reject(new WsBridgeError(event.reason === 'client' ? 'closed' : event.reason, 'the client closed'));
        }),
      ];
    });
  }

  /** Calls `listener` with every message of `pattern` (a topic, or a wildcard such as
   * `list:*`); returns a function removing it. */
  listen(pattern, listener) {
    return this.#listeners.add(pattern, listener);
  }

  /** Subscribes to topics (kept across reconnects, with recovery); `listener`, if given,
   * hears their messages. Resolves with the server's `subscribed` reply. */
  subscribe(topics, listener) {
    const list = topicList(topics);
    const removers = listener ? list.map((t) => this.#listeners.add(t, listener)) : [];
    const added = list.filter((t) => !this.#subscriptions.has(t));
    for (const t of added) this.#subscriptions.set(t, 'pending');
    return this.#request({ action: 'subscribe', topics: list }, 'subscribe', {
      onReply: (reply) => {
        for (const t of reply.topics ?? []) {
          if (this.#subscriptions.has(t)) this.#subscriptions.set(t, 'active');
        }
        this.#applyHistory(reply, {});
      },
      onError: () => {
        for (const t of added) if (this.#subscriptions.get(t) === 'pending') this.#subscriptions.delete(t);
        removers.forEach((remove) => remove());
      },
    });
  }

  /** Unsubscribes, and removes the listeners of these topics. */
  unsubscribe(topics) {
    const list = topicList(topics);
    for (const t of list) {
      this.#subscriptions.delete(t);
      this.#listeners.removeAll(t);
      this.#streams.forget(t);
    }
    return this.#request({ action: 'unsubscribe', topics: list }, 'unsubscribe');
  }

  /** Publishes to a topic's subscribers. Not re-sent after a drop (it may have gone out):
   * a publish in flight when the connection ends rejects with `connection_lost`. */
  publish(topic, event, data = null, { echo = false } = {}) {
    const frame = { action: 'publish', topic, event, data };
    if (echo) frame.echo = true;
    return this.#request(frame, 'publish', {
      // Without echo the message never comes back: its offset is skipped, its id known.
      onReply: (reply) => {
        if (!echo) this.#streams.published(topic, reply);
      },
    });
  }

  presence(topic) {
    return this.#request({ action: 'presence', topic }, 'read');
  }

  /** The topic's kept messages: the last `limit`, or those after `since`. */
  history(topic, { limit, since } = {}) {
    const frame = { action: 'history', topic };
    if (limit !== undefined) frame.limit = limit;
    if (since !== undefined) frame.since = since;
    return this.#request(frame, 'read');
  }

  whoami() {
    return this.#request({ action: 'whoami' }, 'read');
  }

  /** The last position delivered to the app on a topic with history. */
  position(topic) {
    return this.#streams.position(topic);
  }

  /** Connects now: after the client gave up (handshake refusals), or to skip a wait. */
  reconnect() {
    if (this.#closed) throw new WsBridgeError('closed', 'close() was called');
    this.#connection.reconnect();
  }

  /** Closes for good: no reconnect; pending requests reject with `closed`. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#requests.rejectAll('closed', 'close() was called');
    this.#connection.stop();
    // After giving up the client was closed already, and said why.
    if (this.#connection.gaveUp) return;
    this.#setState('closed', { reason: 'client' });
    this.#events.emit('closed', { reason: 'client' });
  }

  // ---- requests ------------------------------------------------------------------------

  #request(frame, kind, hooks = {}) {
    if (this.#closed) return Promise.reject(new WsBridgeError('closed', 'close() was called'));
    if (this.#connection.gaveUp) {
      return Promise.reject(new WsBridgeError('handshake_refused', 'the client gave up: call reconnect()'));
    }
    return new Promise((resolve, reject) => {
      this.#submit({ frame, kind, resolve, reject, rateRetries: 0, resentAfterNotConnected: false, ...hooks });
    });
  }

  /** A request of the client's own (resubscribe, catch-up, ping): sent only on an open
   * socket, never queued, since a reconnect redoes what it was for. */
  #internal(frame, hooks) {
    if (!this.#isOpen()) return;
    this.#send({ frame, kind: 'internal', internal: true, resolve() {}, reject() {}, rateRetries: 0, ...hooks });
  }

  #isOpen() {
    return this.#connection.isOpen;
  }

  #submit(request) {
    if (this.#isOpen()) this.#send(request);
    else this.#requests.enqueue(request);
  }

  #send(request) {
    this.#requests.sent(request);
    // Not taken: the socket is closing, and its end requeues what was in flight, this too.
    if (!this.#connection.send(JSON.stringify(request.frame))) return;
    const timeoutMs = request.timeoutMs ?? this.#options.requestTimeoutMs;
    request.timer = setTimeout(() => this.#timedOut(request), timeoutMs);
  }

  #timedOut(request) {
    this.#requests.forget(request);
    if (request.internal) {
      this.#connection.declareDead(request.kind === 'ping' ? 'no pong' : 'no reply');
      return;
    }
    const error = new WsBridgeError('timeout', `no reply within ${request.timeoutMs ?? this.#options.requestTimeoutMs} ms`);
    request.onError?.(error);
    request.reject(error);
  }

  #settle(request, frame) {
    clearTimeout(request.timer);
    if (typeof frame.error !== 'string') {
      const reply = withoutRef(frame);
      request.onReply?.(reply);
      request.resolve(reply);
      return;
    }
    if (frame.error === 'rate_limited' && request.rateRetries < this.#options.rateLimitRetries) {
      request.rateRetries += 1;
      setTimeout(() => {
        if (this.#closed) request.reject(new WsBridgeError('closed', 'close() was called'));
        else if (!request.internal) this.#submit(request);
        else if (this.#isOpen()) this.#send(request);
      }, frame.retry_after_ms ?? 100);
      return;
    }
    if (frame.error === 'not_connected' && !request.internal) {
      // The bridge no longer has this connection registered (its row expired, or was removed
      // by a close that never reached the socket): it refuses every frame but ping before
      // carrying it out, and sends this socket nothing more. Replace the connection, and
      // send the request again on the next one — a publish too, since none of it was
      // applied. Once only: a new connection is registered before it opens.
      this.#connection.declareDead('not_connected');
      if (!request.resentAfterNotConnected) {
        request.resentAfterNotConnected = true;
        this.#requests.enqueue(request);
        return;
      }
    }
    const error = new WsBridgeError(frame.error, frame.details ?? '', withoutRef(frame));
    request.onError?.(error);
    request.reject(error);
  }

  // ---- frames and delivery -------------------------------------------------------------

  #onFrame(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.#events.emit('error', new WsBridgeError('invalid_json', 'the server sent a frame that is not JSON'));
      return;
    }
    const request = this.#requests.answered(frame);
    if (request) {
      this.#settle(request, frame);
      return;
    }
    // A late reply to a request that timed out is no message.
    if (this.#requests.isReply(frame)) return;
    this.#streams.live(frame);
  }

  #dispatch(message) {
    for (const listener of this.#listeners.listenersFor(message)) {
      try {
        listener(message);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
    if (isJoinOrLeave(message)) {
      this.#events.emit(message.event, { topic: message.topic, userId: message.data.user_id, message });
    }
    this.#events.emit('message', message);
  }

  /** A subscribe reply's `history`: where each topic with history stands, and for those
   * resumed with `since`, what was missed. */
  #applyHistory(reply, since) {
    const history = reply.history ?? {};
    for (const topic of reply.topics ?? []) {
      if (!this.#subscriptions.has(topic)) continue;
      if (history[topic]) {
        this.#streams.subscribed(topic, history[topic], Object.hasOwn(since, topic));
      } else if (this.#streams.tracks(topic)) {
        // Its namespace keeps no history any more: plain delivery from now on.
        this.#streams.catchUpFailed(topic);
        this.#streams.forget(topic);
      }
    }
  }

  #catchUp(topic, since) {
    this.#internal(
      { action: 'history', topic, since },
      {
        onReply: (reply) => this.#streams.historyReply(topic, reply),
        onError: (error) => {
          if (CONNECTION_ERRORS.has(error.code)) {
            this.#connection.declareDead(error.code);
            return;
          }
          this.#streams.catchUpFailed(topic);
          this.#events.emit('error', error);
        },
      },
    );
  }

  #resubscribe() {
    const topics = [...this.#subscriptions].filter(([, s]) => s === 'active').map(([t]) => t);
    if (topics.length === 0) return;
    const since = {};
    for (const topic of topics) {
      if (!this.#streams.tracks(topic)) continue;
      const from = this.#streams.resumeFrom(topic);
      if (from) since[topic] = from;
      this.#streams.beginCatchUp(topic);
    }
    const frame = { action: 'subscribe', topics };
    if (Object.keys(since).length > 0) frame.since = since;
    this.#internal(frame, {
      onReply: (reply) => {
        this.#applyHistory(reply, since);
        this.#events.emit('resubscribed', { topics: reply.topics ?? topics });
      },
      onError: (error) => this.#resubscribeFailed(topics, since, error),
    });
  }

  /** One refused topic refuses a whole subscribe: try each alone, so the others survive;
   * those refused on their own are dropped, with an event (a bridge failure on one of them
   * instead declares the connection dead, and all are tried again on the next). Once every topic is answered,
   * those restored are announced as `resubscribed`, as an unrefused resubscribe would: the
   * app refreshes presence there. */
  #resubscribeFailed(topics, since, error) {
    if (CONNECTION_ERRORS.has(error.code)) {
      this.#connection.declareDead(error.code);
      return;
    }
    const restored = [];
    let unanswered = topics.length;
    const answered = () => {
      unanswered -= 1;
      if (unanswered === 0 && restored.length > 0) this.#events.emit('resubscribed', { topics: restored });
    };
    for (const topic of topics) {
      const frame = { action: 'subscribe', topics: [topic] };
      if (since[topic]) frame.since = { [topic]: since[topic] };
      this.#internal(frame, {
        onReply: (reply) => {
          this.#applyHistory(reply, since);
          restored.push(...(reply.topics ?? [topic]));
          answered();
        },
        onError: (refused) => {
          // The bridge failing is not a refusal: keep the topic and try it all again on the
          // next connection, as the whole resubscribe does (nothing dropped on a 500).
          if (CONNECTION_ERRORS.has(refused.code)) {
            this.#connection.declareDead(refused.code);
            return;
          }
          this.#subscriptions.delete(topic);
          this.#streams.catchUpFailed(topic);
          this.#streams.forget(topic);
          this.#events.emit('subscription-error', { topic, error: refused });
          answered();
        },
      });
    }
  }

  // ---- the connection ------------------------------------------------------------------

  #onOpen(reconnected) {
    // What the connection owes first: its subscriptions back, then what waited for it.
    this.#resubscribe();
    for (const request of this.#requests.drain()) this.#send(request);
    this.#keepaliveTimer = setInterval(() => this.#ping(), this.#options.keepaliveMs);
    // After a silent renewal (API Gateway's 1001) the state never left 'open'.
    if (this.#state !== 'open') this.#setState('open');
    this.#events.emit('open', { reconnected });
  }

  #ping() {
    this.#internal({ action: 'ping' }, { kind: 'ping', timeoutMs: this.#options.pongTimeoutMs });
  }

  /** The socket is gone (or given up on): stop its timers, and sort what was in flight.
   * Reads and subscriptions are sent again on the next connection; a publish is not. */
  #teardown() {
    clearInterval(this.#keepaliveTimer);
    const again = [];
    for (const request of this.#requests.takeInFlight()) {
      clearTimeout(request.timer);
      if (request.internal) continue;
      if (request.kind === 'publish') {
        request.reject(new WsBridgeError('connection_lost', 'the connection ended before the reply; the message may or may not have been sent'));
      } else {
        again.push(request);
      }
    }
    for (const request of [...again, ...this.#requests.drain()]) this.#requests.enqueue(request);
    this.#streams.abortCatchUps();
  }

  #setState(state, detail = {}) {
    const previous = this.#state;
    this.#state = state;
    this.#events.emit('state', { state, previous, ...detail });
  }
}
