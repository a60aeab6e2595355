// The chat websocket, kept open: reconnects with exponential backoff and full jitter.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
const NO_SESSION = 4001; // the server's close code for a socket without a session

export class Connection {
  // onFrame(frame) gets each JSON frame; onState(state, detail) hears "connecting", "open",
  // "waiting" (detail: ms until the next attempt), "offline" and "expired".
  constructor(url, { onFrame, onState, onClose }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onState = onState;
    this.onClose = onClose;
    this.socket = null;
    this.attempts = 0;
    this.timer = null;
    this.stopped = false;
    window.addEventListener("online", () => this.reconnectNow());
    // Offline, an open socket is as good as dead (a phone may not notice for minutes): close it and
    // reconnect when the network is back; the replies in flight are resumed where they were.
    window.addEventListener("offline", () => this.socket?.close());
    window.addEventListener("pagehide", () => { this.stopped = true; });
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  // Open the socket now.
  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    this.onState("connecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempts = 0;
      this.onState("open");
    });
    socket.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        console.error("chat: ignoring a frame that is not JSON", err);
        return;
      }
      this.onFrame(frame);
    });
    socket.addEventListener("close", (event) => this.closed(socket, event));
  }

  closed(socket, event) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.onClose();
    if (this.stopped) return;
    if (event.code === NO_SESSION) {
      this.onState("expired");
      return;
    }
    this.schedule();
  }

  // Wait before the next attempt: 0.5 s, 1 s, 2 s … up to 15 s, each a random part of that.
  schedule() {
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempts);
    const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
    this.attempts += 1;
    this.onState(navigator.onLine === false ? "offline" : "waiting", delay);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  // Skip the wait (the browser came back online, or the person asked).
  reconnectNow() {
    if (this.timer !== null) this.connect();
  }

  // Send one frame; return whether the socket took it.
  send(frame) {
    if (!this.isOpen) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }
}

// The replies this page shows while they stream: the last frame (`seq`) of each it has, so a
// reconnecting page asks for exactly the rest and a frame seen twice is never shown twice.
export class Replies {
  constructor() {
    this.seen = new Map(); // message id -> {seq, lengths: Map(seq -> characters shown up to it)}
  }

  track(message, seq = 0, length = 0) {
    if (!this.seen.has(message)) this.seen.set(message, { seq, lengths: new Map([[seq, length]]) });
  }

  forget(message) {
    this.seen.delete(message);
  }

  // The `have` of a `resume` frame: {message id: last seq}.
  have() {
    const have = {};
    for (const [message, state] of this.seen) have[message] = state.seq;
    return have;
  }

  // Return the text of a `delta` to show, "" for one already shown, or null after a gap (resume).
  delta(frame) {
    const state = this.seen.get(frame.message);
    if (state === undefined || frame.seq === undefined) return frame.text; // an older server: no seqs
    if (frame.seq <= state.seq) return "";
    if (frame.seq > state.seq + 1) return null;
    state.lengths.set(frame.seq, state.lengths.get(state.seq) + frame.text.length);
    state.seq = frame.seq;
    return frame.text;
  }

  // Return the text of a `catchup` to show (what this page lacks of it), or null if it cannot be placed.
  catchup(frame) {
    this.track(frame.message);
    const state = this.seen.get(frame.message);
    if (frame.seq <= state.seq) return "";
    const base = state.lengths.get(frame.after);
    if (frame.after > state.seq || base === undefined) return null;
    const shown = state.lengths.get(state.seq);
    state.lengths.set(frame.seq, base + frame.text.length);
    state.seq = frame.seq;
    return frame.text.slice(shown - base);
  }
}
