// What a client and the gateway said to each other: a WebSocket that records every frame it
// sends and receives, parsed, across every connection the client opens. It is the real
// socket underneath; the record lets a test check that the path it is about was taken (a
// refusal was met and answered), beside what the app saw.

/** A frame as JSON, or as the text it is when it is not JSON (the client reports those). */
function parsed(data) {
  try {
    return JSON.parse(data);
  } catch {
    return data;
  }
}

/** A recording `WebSocket` to pass in a client's options, and its `sent` and `received`
 * frames (oldest first). */
export function recordingWebSocket(Base = globalThis.WebSocket) {
  const sent = [];
  const received = [];
  class RecordingWebSocket extends Base {
    constructor(...args) {
      super(...args);
      // Added before the client's own `onmessage`, so a frame is recorded before it is
      // handled: a test woken by the client's event finds the frame here.
      this.addEventListener('message', (event) => received.push(parsed(event.data)));
    }

    send(data) {
      sent.push(parsed(data));
      super.send(data);
    }
  }
  return { WebSocket: RecordingWebSocket, sent, received };
}
