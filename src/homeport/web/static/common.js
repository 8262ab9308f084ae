// homeport dashboard: what every page shares (DOM helpers, JSON, the event stream, the header).
"use strict";

const HP = (() => {
  const body = document.body;
  const base = body.dataset.base || "/ui";

  /** An element with attributes and children (strings become text nodes: never HTML). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key in node && typeof value !== "string") node[key] = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // No token here: with --token the page never holds it.  The browser sends the
  // dashboard's HttpOnly cookie with these same-origin requests, and the daemon takes
  // it from a request whose Origin is its own.
  function headers(extra) {
    return Object.assign({}, extra || {});
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: headers(), credentials: "same-origin" });
    if (!response.ok) {
      const text = (await response.text()).trim();
      throw new Error(text || `${response.status} ${response.statusText}`);
    }
    return response.json();
  }

  function pad(n, width) { return String(n).padStart(width || 2, "0"); }

  /** Local wall-clock time of *seconds* since the epoch, with milliseconds. */
  function clock(seconds, withDate) {
    const d = new Date(seconds * 1000);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
    if (!withDate) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  function uptime(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), r = s % 60;
    if (d) return `${d}d ${h}h ${m}m`;
    if (h) return `${h}h ${m}m`;
    return `${m}m ${r}s`;
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  // -- the live indicator ------------------------------------------------------------
  const live = document.getElementById("live");
  const streams = new Set();
  function showLive() {
    if (!live) return;
    const states = [...streams].map((s) => s.state);
    const on = states.length > 0 && states.every((s) => s === "open");
    live.classList.toggle("on", on);
    live.classList.toggle("off", states.some((s) => s !== "open"));
    live.title = states.length === 0 ? "no live updates" : on ? "live" : "reconnecting…";
  }

  /**
   * Follow /v1/events for *topics* (plus *params*, e.g. the log filters).  Each event
   * reaches onEvent({id, topic, data, raw}).  The browser's EventSource resumes with
   * Last-Event-ID by itself after a dropped connection; when it gives up (an HTTP
   * error, a refused connection), this opens a new stream from ?last_event_id=, so a
   * reconnect never leaves a gap that the daemon's history can fill.
   */
  function stream(topics, params, handlers) {
    const self = { state: "connecting", lastId: handlers.lastId || null, source: null, closed: false };
    streams.add(self);
    let delay = 1000;
    function url() {
      const q = new URLSearchParams(params || {});
      for (const t of topics) q.append("topic", t);
      if (self.lastId !== null) q.set("last_event_id", String(self.lastId));
      return `/v1/events?${q}`;
    }
    function onMessage(topic, e) {
      const id = e.lastEventId ? Number(e.lastEventId) : null;
      if (id !== null && self.lastId !== null && id <= self.lastId) return; // seen already
      if (id !== null) self.lastId = id;
      let data = e.data;
      try { data = JSON.parse(e.data); } catch (_) { /* plain text */ }
      handlers.onEvent({ id, topic, data, raw: e.data });
    }
    function open() {
      if (self.closed) return;
      const source = new EventSource(url(), { withCredentials: true });
      self.source = source;
      const listened = new Set();
      const listen = (topic) => {
        if (listened.has(topic)) return;
        listened.add(topic);
        source.addEventListener(topic, (e) => onMessage(topic, e));
      };
      // Named events: listen for each exact topic; prefix subscriptions report
      // topics as they come (see `message` below for unnamed ones).
      topics.filter((t) => !t.endsWith("*")).forEach(listen);
      source.addEventListener("message", (e) => onMessage("message", e));
      self.listen = listen;
      source.onopen = () => {
        const reconnect = self.state === "reconnecting";
        self.state = "open";
        delay = 1000;
        showLive();
        if (handlers.onOpen) handlers.onOpen(reconnect);
      };
      source.onerror = () => {
        if (self.closed) return;
        self.state = "reconnecting";
        showLive();
        if (handlers.onError) handlers.onError();
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(open, delay);
          delay = Math.min(delay * 2, 15000);
        }
      };
    }
    self.close = () => {
      self.closed = true;
      if (self.source) self.source.close();
      streams.delete(self);
      showLive();
    };
    open();
    showLive();
    return self;
  }

  /**
   * EventSource only dispatches named events to listeners registered for that exact
   * name, so prefix subscriptions (zmq/*) need the names ahead of time.  This stream
   * variant reads text/event-stream with fetch instead: every topic, ids, resume.
   */
  function anyStream(topics, params, handlers) {
    const self = { state: "connecting", lastId: handlers.lastId || null, closed: false, abort: null };
    streams.add(self);
    let delay = 1000;
    async function run() {
      while (!self.closed) {
        const q = new URLSearchParams(params || {});
        for (const t of topics) q.append("topic", t);
        const controller = new AbortController();
        self.abort = controller;
        const reconnect = self.state === "reconnecting";
        try {
          const h = headers({ Accept: "text/event-stream" });
          if (self.lastId !== null) h["Last-Event-ID"] = String(self.lastId);
          const response = await fetch(`/v1/events?${q}`, {
            headers: h, credentials: "same-origin", cache: "no-store", signal: controller.signal,
          });
          if (!response.ok) throw new Error(`${response.status} ${(await response.text()).trim()}`);
          self.state = "open";
          delay = 1000;
          showLive();
          if (handlers.onOpen) handlers.onOpen(reconnect);
          await readEvents(response.body, (frame) => {
            if (frame.comment !== undefined) {
              if (handlers.onComment) handlers.onComment(frame.comment);
              return;
            }
            const id = frame.id ? Number(frame.id) : null;
            if (id !== null && self.lastId !== null && id <= self.lastId) return;
            if (id !== null) self.lastId = id;
            let data = frame.data;
            try { data = JSON.parse(frame.data); } catch (_) { /* plain text */ }
            handlers.onEvent({ id, topic: frame.event || "message", data, raw: frame.data, time: frame.time });
          });
        } catch (err) {
          if (self.closed) return;
          if (handlers.onError) handlers.onError(err);
        }
        if (self.closed) return;
        self.state = "reconnecting";
        showLive();
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, 15000);
      }
    }
    self.close = () => {
      self.closed = true;
      if (self.abort) self.abort.abort();
      streams.delete(self);
      showLive();
    };
    run();
    showLive();
    return self;
  }

  /** Parse a text/event-stream body, calling onFrame for each event and comment. */
  async function readEvents(body, onFrame) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let frame = { data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let nl;
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (frame.data.length || frame.id !== undefined || frame.event !== undefined) {
            onFrame({ id: frame.id, event: frame.event, time: frame.time, data: frame.data.join("\n") });
          }
          frame = { data: [] };
        } else if (line.startsWith(":")) {
          onFrame({ comment: line.slice(1).trim() });
        } else {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "data") frame.data.push(val);
          else if (field === "id") frame.id = val;
          else if (field === "event") frame.event = val;
          else if (field === "time") frame.time = Number(val);
        }
      }
    }
  }

  // -- the header ----------------------------------------------------------------------
  const up = document.getElementById("fact-uptime");
  let upBase = up ? Number(up.dataset.seconds || 0) : 0;
  let upAt = Date.now();
  if (up) {
    setInterval(() => { up.textContent = uptime(upBase + (Date.now() - upAt) / 1000); }, 1000);
  }
  function setText(id, value) {
    const node = document.getElementById(id);
    if (node && value !== undefined && value !== null) node.textContent = String(value);
  }
  async function refreshFacts() {
    try {
      const info = await getJSON(`${base}/info.json`);
      setText("fact-node", info.node);
      setText("fact-dc", info.datacenter);
      setText("fact-version", info.version);
      upBase = info.uptime_seconds; upAt = Date.now();
      const c = info.counts || {};
      setText("fact-services", c.services);
      setText("fact-instances", c.instances);
      setText("fact-keys", c.keys);
      const checks = document.querySelectorAll("#fact-checks .count");
      if (checks.length === 3) {
        checks[0].textContent = c.passing ?? 0;
        checks[1].textContent = c.warning ?? 0;
        checks[2].textContent = c.critical ?? 0;
      }
    } catch (_) { /* the next tick tries again */ }
  }
  const factsSoon = debounce(refreshFacts, 300);
  if (document.getElementById("facts")) setInterval(refreshFacts, 15000);

  return { base, el, headers, getJSON, clock, uptime, debounce, stream, anyStream, refreshFacts: factsSoon };
})();
