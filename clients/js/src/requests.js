// Requests and their replies. Every frame the client sends carries a `ref` (a counter); the
// server echoes it in the reply or error frame, which is how a reply finds its request
// however many are in flight.

import { WsBridgeError } from './errors.js';

export class Requests {
  #nextRef = 1;
  #inFlight = new Map();
  #queue = [];

  /** A request waiting for the socket to be open. `kind` decides what a drop does to it. */
  enqueue(request) {
    this.#queue.push(request);
  }

  /** Takes every queued request, oldest first. */
  drain() {
    const queued = this.#queue;
    this.#queue = [];
    return queued;
  }

  /** Stamps the frame with a fresh ref and records the request as sent. */
  sent(request) {
    const ref = this.#nextRef++;
    request.frame = { ...request.frame, ref };
    this.#inFlight.set(ref, request);
    return ref;
  }

  /** The request a frame answers, removed from the table; undefined for frames that are
   * no reply (messages) or answer a request no longer waited for. */
  answered(frame) {
    const ref = frame?.ref;
    if (!Number.isSafeInteger(ref)) return undefined;
    const request = this.#inFlight.get(ref);
    this.#inFlight.delete(ref);
    return request;
  }

  /** Whether a frame is a reply to one of ours (maybe one that timed out), not a message:
   * our refs are the integers handed out so far. */
  isReply(frame) {
    const ref = frame?.ref;
    return (
      Number.isSafeInteger(ref) &&
      ref > 0 &&
      ref < this.#nextRef &&
      (typeof frame.action === 'string' || typeof frame.error === 'string')
    );
  }

  forget(request) {
    for (const [ref, r] of this.#inFlight) if (r === request) this.#inFlight.delete(ref);
  }

  /** The socket is gone: takes every request in flight. */
  takeInFlight() {
    const taken = [...this.#inFlight.values()];
    this.#inFlight.clear();
    return taken;
  }

  /** Rejects everything, queued and in flight, with `code`. */
  rejectAll(code, details) {
    for (const request of [...this.takeInFlight(), ...this.drain()]) {
      clearTimeout(request.timer);
      request.reject(new WsBridgeError(code, details));
    }
  }
}
