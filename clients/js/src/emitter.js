// A minimal event emitter that works the same in browsers and Node (EventTarget would make
// every payload an Event, which is clumsy for plain data).

export class Emitter {
  #listeners = new Map();

  /** Adds a listener; returns a function that removes it. */
  on(name, listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, (set = new Set()));
    set.add(listener);
    return () => this.off(name, listener);
  }

  off(name, listener) {
    this.#listeners.get(name)?.delete(listener);
  }

  /** Calls every listener of `name`. A listener that throws must not break the client's own
   * bookkeeping (a half-delivered recovery would lose messages), so its error is rethrown
   * on its own, outside this call stack, where the runtime reports it. */
  emit(name, payload) {
    const set = this.#listeners.get(name);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(payload);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
