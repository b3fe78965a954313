// Exactly-once, in-order delivery for topics with history, on top of a bridge that delivers
// at least once and does not order a reply against the messages posted beside it.
//
// Per subscribed topic with history the client remembers the last position delivered to
// the app ({epoch, offset}). A message is delivered when it continues that position; one
// at or below it is a duplicate; one beyond it means something is missing (a reconnect, a
// failed post, two broadcasts overtaking each other), and the topic "catches up": live
// messages are held while the missing ones are read (`subscribe` with `since` after a
// reconnect, `history` with `since` otherwise), then the held ones are replayed through the
// same rule. Every message id delivered is remembered too (a bounded set), since a retried
// post can deliver one message twice on any topic.

/** A Set that forgets its oldest entries beyond `max`. */
class RecentIds {
  #ids = new Set();
  #max;
  constructor(max) {
    this.#max = max;
  }
  has(id) {
    return this.#ids.has(id);
  }
  add(id) {
    if (this.#ids.has(id)) return;
    this.#ids.add(id);
    if (this.#ids.size > this.#max) this.#ids.delete(this.#ids.values().next().value);
  }
}

const hasPosition = (message) =>
  Number.isSafeInteger(message?.offset) && typeof message?.epoch === 'string';

export class Streams {
  #states = new Map();
  #seen;
  #deliver;
  #catchUp;
  #events;

  /**
   * @param {object} options
   * @param {number} options.idMemory how many delivered ids to remember
   * @param {(message: object) => void} options.deliver hands a message to the app
   * @param {(topic: string, since: {offset: number, epoch: string}) => void} options.catchUp
   *   asks the server for the messages of `topic` after `since` (the answer comes back
   *   through `historyReply`)
   * @param {(name: string, payload: object) => void} options.events
   *   'recovered' / 'recovery-failed' notifications
   */
  constructor({ idMemory, deliver, catchUp, events }) {
    this.#seen = new RecentIds(idMemory);
    this.#deliver = deliver;
    this.#catchUp = catchUp;
    this.#events = events;
  }

  /** Whether the topic is tracked (subscribed exactly, in a namespace with history). */
  tracks(topic) {
    return this.#states.has(topic);
  }

  /** The last position delivered to the app, or undefined. */
  position(topic) {
    const s = this.#states.get(topic);
    return s ? { epoch: s.epoch, offset: s.offset } : undefined;
  }

  /** Where a resubscribe should resume this topic: a `since`, or null when the stream was
   * empty when last seen (nothing to resume from; the reply's position tells what came). */
  resumeFrom(topic) {
    const s = this.#states.get(topic);
    return s && s.epoch !== null ? { offset: s.offset, epoch: s.epoch } : null;
  }

  forget(topic) {
    this.#states.delete(topic);
  }

  /** Holds live messages of `topic` from now on, until its catch-up answer is applied. */
  beginCatchUp(topic) {
    const s = this.#states.get(topic);
    if (s && !s.catchingUp) Object.assign(s, { catchingUp: true, buffer: [], recovered: 0 });
  }

  /** The connection is gone: catch-ups in flight will never be answered. What they held
   * will come back through the resubscribe's recovery, which resumes from the same
   * position, so it is dropped rather than replayed out of order. */
  abortCatchUps() {
    for (const s of this.#states.values()) Object.assign(s, { catchingUp: false, buffer: [] });
  }

  /** A message that arrived on the socket. */
  live(message) {
    const topic = typeof message?.topic === 'string' ? message.topic : undefined;
    const s = topic === undefined ? undefined : this.#states.get(topic);
    if (!s || !hasPosition(message)) {
      this.#deliverOnce(message);
      return;
    }
    if (s.catchingUp) {
      s.buffer.push(message);
      return;
    }
    this.#skipOwn(s);
    const sameEpoch = message.epoch === s.epoch;
    if (sameEpoch && message.offset <= s.offset) {
      // Already delivered: a duplicate post, or one a recovery carried too.
      this.#seenId(message);
      return;
    }
    const continues = sameEpoch ? message.offset === s.offset + 1 : message.offset === 1;
    if (continues) {
      this.#advance(s, message);
      return;
    }
    // A gap: read what is missing; hold this one (and what follows) meanwhile.
    const since = sameEpoch ? { offset: s.offset, epoch: s.epoch } : { offset: 0, epoch: message.epoch };
    this.beginCatchUp(topic);
    s.buffer.push(message);
    this.#catchUp(topic, since);
  }

  /** One topic of a subscribe reply's `history`. `askedSince` says whether the subscribe
   * gave this topic a position (a recovery) or not (where the stream stands). */
  subscribed(topic, reply, askedSince) {
    let s = this.#states.get(topic);
    if (!s) {
      s = { epoch: reply.epoch ?? null, offset: reply.offset ?? 0, catchingUp: false, buffer: [], skips: new Set(), recovered: 0 };
      this.#states.set(topic, s);
      return;
    }
    if (askedSince) {
      this.#applyRecovery(topic, s, reply);
      return;
    }
    if (s.epoch === null && typeof reply.epoch === 'string' && reply.offset > 0) {
      // The stream was empty when last seen and has messages now: all of them came after.
      this.beginCatchUp(topic);
      this.#catchUp(topic, { offset: 0, epoch: reply.epoch });
      return;
    }
    if (s.catchingUp) this.#finish(topic, s, false);
  }

  /** The answer to a catch-up's `history` read. */
  historyReply(topic, reply) {
    const s = this.#states.get(topic);
    if (s?.catchingUp) this.#applyRecovery(topic, s, reply);
  }

  /** A catch-up could not be read (refused): give up on the gap, keep going live. */
  catchUpFailed(topic) {
    const s = this.#states.get(topic);
    if (s?.catchingUp) this.#finish(topic, s, false, { skipGaps: true });
  }

  /** The reply to this client's own publish: its message will not come back (no echo), so
   * its offset is one the stream may skip, and its id one never to deliver. */
  published(topic, reply) {
    if (typeof reply?.id === 'string') this.#seen.add(reply.id);
    const s = this.#states.get(topic);
    if (!s || !Number.isSafeInteger(reply.offset) || typeof reply.epoch !== 'string') return;
    if (s.epoch === null && reply.offset === 1) Object.assign(s, { epoch: reply.epoch, offset: 1 });
    else if (s.epoch === reply.epoch && reply.offset > s.offset) s.skips.add(reply.offset);
    if (!s.catchingUp) this.#skipOwn(s);
  }

  #applyRecovery(topic, s, reply) {
    if (reply.recovered === false) {
      Object.assign(s, { epoch: reply.epoch ?? null, offset: reply.offset ?? 0 });
      s.skips.clear();
      this.#events('recovery-failed', { topic, epoch: s.epoch, offset: s.offset });
      this.#finish(topic, s, false);
      return;
    }
    for (const message of reply.messages ?? []) {
      if (!hasPosition(message)) continue;
      if (message.epoch === s.epoch && message.offset <= s.offset) {
        this.#seenId(message);
        continue;
      }
      if (this.#advance(s, message)) s.recovered += 1;
    }
    if (reply.more) {
      this.#catchUp(topic, { offset: s.offset, epoch: s.epoch });
      return;
    }
    this.#finish(topic, s, true);
  }

  /** Ends a catch-up: replays what was held through the live rule, oldest first (which may
   * start another catch-up, holding the rest again). */
  #finish(topic, s, recovered, { skipGaps = false } = {}) {
    const held = s.buffer.sort((a, b) => (a.epoch === b.epoch ? a.offset - b.offset : 0));
    const count = s.recovered;
    Object.assign(s, { catchingUp: false, buffer: [], recovered: 0 });
    if (recovered) this.#events('recovered', { topic, count, epoch: s.epoch, offset: s.offset });
    for (const message of held) {
      if (skipGaps && message.epoch === s.epoch && message.offset > s.offset + 1) {
        // The gap could not be read: accept the jump rather than ask again forever.
        s.offset = message.offset - 1;
      }
      this.live(message);
    }
  }

  /** Moves the position over this client's own messages, and delivers `message`
   * (returns whether it was new to the app). */
  #advance(s, message) {
    s.epoch = message.epoch;
    s.offset = message.offset;
    this.#skipOwn(s);
    return this.#deliverOnce(message);
  }

  #skipOwn(s) {
    while (s.skips.has(s.offset + 1)) {
      s.skips.delete(s.offset + 1);
      s.offset += 1;
    }
    for (const offset of s.skips) if (offset <= s.offset) s.skips.delete(offset);
  }

  #seenId(message) {
    if (typeof message?.id === 'string') this.#seen.add(message.id);
  }

  #deliverOnce(message) {
    const id = message && typeof message === 'object' ? message.id : undefined;
    if (typeof id === 'string') {
      if (this.#seen.has(id)) return false;
      this.#seen.add(id);
    }
    this.#deliver(message);
    return true;
  }
}
