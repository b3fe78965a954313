// Topic listeners, and which topics a delivered message concerns. A listener registered on
// a wildcard pattern (`list:*`) hears every topic the pattern matches, as the server's
// wildcard subscription delivers them.

/** Whether `pattern` is a wildcard: it ends in `:*` or `/*`. */
export function isPattern(pattern) {
  return pattern.endsWith(':*') || pattern.endsWith('/*');
}

/** The server's rule: a pattern matches every topic that starts with what comes before its
 * `*` and has at least one more character; an exact topic matches itself. */
export function matches(pattern, topic) {
  if (!isPattern(pattern)) return pattern === topic;
  const prefix = pattern.slice(0, -1);
  return topic.length > prefix.length && topic.startsWith(prefix);
}

/** The topics a message names: `topic`, or `topics` for a broadcast to several. */
export function topicsOf(message) {
  if (message && typeof message === 'object') {
    if (typeof message.topic === 'string') return [message.topic];
    if (Array.isArray(message.topics)) return message.topics.filter((t) => typeof t === 'string');
  }
  return [];
}

export class TopicListeners {
  #byPattern = new Map();

  add(pattern, listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    let set = this.#byPattern.get(pattern);
    if (!set) this.#byPattern.set(pattern, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.#byPattern.get(pattern) === set) this.#byPattern.delete(pattern);
    };
  }

  removeAll(pattern) {
    this.#byPattern.delete(pattern);
  }

  /** Every listener the message concerns, each once even when several of its topics (or a
   * topic and a pattern) lead to it. */
  listenersFor(message) {
    const found = new Set();
    for (const topic of topicsOf(message)) {
      for (const [pattern, set] of this.#byPattern) {
        if (matches(pattern, topic)) for (const listener of set) found.add(listener);
      }
    }
    return found;
  }
}
