// Type declarations for @wsbridge/client (hand-written; the package is plain ES modules).

/** A JSON value as the bridge carries it. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A place in a topic's stream: the last message delivered, or where a stream stands. */
export interface Position {
  epoch: string | null;
  offset: number;
}

/** A message pushed to the connection: a broadcast's or publish's envelope (or, for a
 * backend's raw `message`, whatever JSON it sent). */
export interface Envelope {
  topic?: string;
  topics?: string[];
  event: string;
  data: Json;
  id: string;
  timestamp: number;
  /** The sender's user id, on a client's publish. */
  from?: string;
  /** On topics with history. */
  offset?: number;
  epoch?: string;
  [key: string]: unknown;
}

export interface StreamReply {
  epoch: string | null;
  offset: number;
  recovered?: boolean;
  messages: Envelope[];
  more: boolean;
}

export interface SubscribedReply {
  action: 'subscribed';
  topics: string[];
  history?: Record<string, StreamReply>;
}

export interface UnsubscribedReply {
  action: 'unsubscribed';
  topics: string[];
}

export interface PublishedReply {
  action: 'published';
  topic: string;
  id: string;
  offset?: number;
  epoch?: string;
  recipients: number;
  delivered: number;
  gone: number;
  failed: number;
}

export interface PresenceReply {
  action: 'presence';
  topic: string;
  users: { user_id: string; connections: number }[];
  total_users: number;
  total_connections: number;
  complete: boolean;
}

export interface HistoryReply extends StreamReply {
  action: 'history';
  topic: string;
}

export interface WhoamiReply {
  action: 'whoami';
  connection_id: string;
  user_id: string;
}

export type ServerErrorCode =
  | 'invalid_json'
  | 'missing_action'
  | 'unknown_action'
  | 'missing_topic'
  | 'invalid_topic'
  | 'too_many_topics'
  | 'invalid_message'
  | 'forbidden'
  | 'invalid_since'
  | 'not_subscribed'
  | 'payload_too_large'
  | 'invalid_ref'
  | 'rate_limited'
  | 'not_connected'
  | 'internal_error';

export type ClientErrorCode = 'connection_lost' | 'timeout' | 'closed' | 'handshake_refused';

export declare const CLIENT_ERROR_CODES: readonly ClientErrorCode[];

/** Every rejection of the client's promises. */
export declare class WsBridgeError extends Error {
  readonly name: 'WsBridgeError';
  /** The server's `error` code, or one of the client's own. */
  readonly code: ServerErrorCode | ClientErrorCode | string;
  readonly details: string;
  /** The server's error frame, when there was one. */
  readonly frame?: { error: string; details: string; retry_after_ms?: number };
  /** With `rate_limited`: milliseconds until the server accepts a frame again. */
  readonly retryAfterMs?: number;
}

export interface ConnectOptions {
  /** The WebSocket API, e.g. `wss://abc.execute-api.eu-west-1.amazonaws.com/prod`. */
  url: string;
  /** A JWT, or a function returning one (or a promise of one), called before every
   * connection attempt, so each reconnect presents a fresh token. */
  token?: string | (() => string | Promise<string>);
  /** First reconnect delays are random in [0, base]; each attempt doubles the ceiling. Default 500. */
  reconnectBaseMs?: number;
  /** The ceiling's cap. Default 30 000. */
  reconnectMaxMs?: number;
  /** Consecutive closes before open (possible refused handshakes) after which the client
   * gives up. Default 8. */
  maxHandshakeRefusals?: number;
  /** How often to ping. Default 300 000 (API Gateway closes after 10 idle minutes). */
  keepaliveMs?: number;
  /** A ping without pong for this long declares the connection dead. Default 10 000. */
  pongTimeoutMs?: number;
  /** A request without reply for this long rejects with `timeout`. Default 30 000. */
  requestTimeoutMs?: number;
  /** How many times a request refused with `rate_limited` is re-sent after the wait the
   * server names, before it rejects. Default 3. */
  rateLimitRetries?: number;
  /** How many delivered message ids are remembered to drop duplicates. Default 1 000. */
  idMemory?: number;
  /** A WebSocket constructor for runtimes without a global one. */
  WebSocket?: new (url: string) => WebSocket;
  /** The random source of the backoff's jitter, in [0, 1). Default Math.random. */
  random?: () => number;
}

export declare const DEFAULTS: Readonly<Required<Omit<ConnectOptions, 'url' | 'token' | 'WebSocket' | 'random'>>>;

/** `'open'` also while a connection API Gateway closed with 1001 (its idle timeout or
 * 2-hour limit) is being renewed: that renewal is silent, and shows as `'reconnecting'`
 * only if its attempt fails. */
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface ClientEvents {
  /** Every change of `state`; `reason` with 'closed': 'client' or 'handshake_refused'.
   * None for a 1001 renewal, which is no change: the state stays 'open'. */
  state: {
    state: ConnectionState;
    /** null for the first event. */
    previous: ConnectionState | null;
    reason?: 'client' | 'handshake_refused' | string;
    code?: number | null;
    delayMs?: number;
    refusals?: number;
  };
  /** The connection is open (subscriptions are being restored); after a 1001 renewal
   * too, with `reconnected: true` and no `state` event. */
  open: { reconnected: boolean };
  /** A connection ended, or an attempt failed; `delayMs` until the next (null: gave up).
   * `code: 1001` after open is a silent renewal: `delayMs` 0, `state` stays 'open'. */
  disconnect: { code: number | null; reason: string; opened: boolean; delayMs: number | null; refusals: number };
  /** The client stopped for good: `close()` was called, or handshakes kept being refused. */
  closed: { reason: 'client' | 'handshake_refused'; refusals?: number };
  /** After a reconnect, the server confirmed the subscriptions again: `topics` are those
   * restored (after a refused resubscribe, those allowed when asked for one by one). */
  resubscribed: { topics: string[] };
  /** Every message delivered, after the topic listeners. */
  message: Envelope;
  /** A user's first connection joined a topic with join/leave events. */
  join: { topic: string; userId: string; message: Envelope };
  /** A user's last connection left it. */
  leave: { topic: string; userId: string; message: Envelope };
  /** Missed messages of a topic were delivered after a reconnect or a gap. */
  recovered: { topic: string; count: number; epoch: string | null; offset: number };
  /** What was missed could not be recovered (trimmed, expired, or a new epoch): refetch
   * the topic's state; delivery goes on from `epoch`/`offset`. */
  'recovery-failed': { topic: string; epoch: string | null; offset: number };
  /** A topic could not be resubscribed after a reconnect and was dropped. */
  'subscription-error': { topic: string; error: WsBridgeError };
  /** Something failed outside any request (the token function, a catch-up read). */
  error: Error;
}

export type MessageListener = (message: Envelope) => void;

export declare class WsBridgeClient {
  constructor(options: ConnectOptions);
  readonly state: ConnectionState;
  on<K extends keyof ClientEvents>(event: K, listener: (payload: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(event: K, listener: (payload: ClientEvents[K]) => void): void;
  /** Resolves when the connection is (next) open — at once while `state` is 'open', a 1001
   * renewal included (requests wait for its new socket); rejects if the client closes or
   * gives up on refused handshakes first (or already has). */
  opened(): Promise<void>;
  /** Hears every message of a topic or wildcard pattern; returns a remover. */
  listen(pattern: string, listener: MessageListener): () => void;
  subscribe(topics: string | string[], listener?: MessageListener): Promise<SubscribedReply>;
  unsubscribe(topics: string | string[]): Promise<UnsubscribedReply>;
  publish(topic: string, event: string, data?: Json, options?: { echo?: boolean }): Promise<PublishedReply>;
  presence(topic: string): Promise<PresenceReply>;
  history(topic: string, options?: { limit?: number; since?: { offset: number; epoch: string } }): Promise<HistoryReply>;
  whoami(): Promise<WhoamiReply>;
  /** The last position delivered on a subscribed topic with history. */
  position(topic: string): Position | undefined;
  /** Connects now (after giving up, or to skip a backoff wait). */
  reconnect(): void;
  close(): void;
}

export declare function connect(options: ConnectOptions): WsBridgeClient;

/** Whether a topic pattern (`list:*`) or topic matches a topic, as the server decides. */
export declare function topicMatches(pattern: string, topic: string): boolean;
