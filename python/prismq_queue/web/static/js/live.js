// The live stream: one WebSocket to /queue/ws carrying every queue's events.
//
// The token goes in the first message, not in the URL, so it stays out of access logs. When the
// connection drops the page reconnects with exponential backoff and jitter (0.5 s doubling up
// to 15 s): a restarting server is not hammered by every open page at the same instant. A
// refusal (close code 4401 or 4403) is final: reconnecting would be refused again.

const MIN_DELAY = 500;
const MAX_DELAY = 15000;
const PING_EVERY = 25000; // keeps idle connections open through proxies that drop silent ones

export class LiveStream {
  /**
   * @param {object} o
   * @param {string} o.url            ws:// URL
   * @param {() => string|null} o.token
   * @param {(msg: {event: string, data: object}) => void} o.onMessage
   * @param {(state: string, detail?: string) => void} o.onState  "connecting" | "live" | "retrying" | "refused"
   * @param {(status: number, detail: string) => void} o.onRefused
   */
  constructor({ url, token, onMessage, onState, onRefused }) {
    Object.assign(this, { url, token, onMessage, onState, onRefused });
    this.ws = null;
    this.failures = 0;
    this.timer = null;
    this.pinger = null;
    this.stopped = true;
    this.refusal = null;
  }

  start() {
    this.stopped = false;
    this.failures = 0;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close();
      this.ws = null;
    }
  }

  connect() {
    this.onState("connecting");
    this.refusal = null;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ token: this.token() || "" }));
      this.pinger = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send('{"type":"ping"}'), PING_EVERY);
    };
    ws.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      if (msg.event === "error") {
        this.refusal = msg.data;
        return;
      }
      if (msg.event === "pong") return;
      if (msg.event === "ready") {
        this.failures = 0;
        this.onState("live");
      }
      this.onMessage(msg);
    };
    ws.onclose = (e) => {
      clearInterval(this.pinger);
      this.ws = null;
      if (this.stopped) return;
      if (e.code === 4401 || e.code === 4403) {
        this.stopped = true;
        this.onState("refused");
        this.onRefused(e.code - 4000, (this.refusal && this.refusal.detail) || e.reason || "refused");
        return;
      }
      const delay = Math.min(MAX_DELAY, MIN_DELAY * 2 ** this.failures) * (0.5 + Math.random() / 2);
      this.failures += 1;
      this.onState("retrying", `reconnecting in ${Math.ceil(delay / 1000)} s`);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }
}
