// Events: pick topics (zmq/* included) and watch them arrive, with ids; resumes by id.
"use strict";

(() => {
  const { el } = HP;
  const KEEP = 1000;
  const form = document.getElementById("topics");
  const more = document.getElementById("more-topics");
  const list = document.getElementById("event-list");
  const status = document.getElementById("event-status");
  let current = null;

  function chosen() {
    const topics = [...form.querySelectorAll('input[name="topic"]:checked')].map((i) => i.value);
    for (const t of more.value.split(/[\s,]+/)) if (t) topics.push(t);
    return [...new Set(topics)];
  }

  function fromURL() {
    const q = new URLSearchParams(location.search);
    const wanted = q.getAll("topic");
    if (!wanted.length) return;
    const extra = [];
    for (const box of form.querySelectorAll('input[name="topic"]')) box.checked = wanted.includes(box.value);
    for (const t of wanted) if (!form.querySelector(`input[name="topic"][value="${CSS.escape(t)}"]`)) extra.push(t);
    more.value = extra.join(", ");
  }

  function show(text) { status.textContent = text; }

  function row(ev) {
    const text = typeof ev.data === "string" ? ev.data : JSON.stringify(ev.data);
    return el("tr", { class: "ev fresh", "data-id": ev.id ?? "", "data-topic": ev.topic },
      el("td", { class: "id" }, ev.id ?? ""),
      el("td", { class: "time" }, HP.clock(ev.time ?? Date.now() / 1000)),
      el("td", { class: "topic" }, ev.topic),
      el("td", { class: "data" }, text.length > 2000 ? `${text.slice(0, 2000)}…` : text));
  }

  function note(text) {
    // Two reconnects with nothing in between (a daemon restarting) say it once.
    const top = list.firstElementChild;
    if (top && top.classList.contains("gap") && top.textContent === text) return;
    list.prepend(el("tr", { class: "gap" }, el("td", { colspan: 4 }, text)));
  }

  function subscribe(pushURL) {
    const topics = chosen();
    if (current) current.close();
    current = null;
    if (pushURL) {
      const url = new URL(location.href);
      url.search = "";
      for (const t of topics) url.searchParams.append("topic", t);
      history.replaceState(null, "", url);
    }
    if (!topics.length) { show("pick a topic"); return; }
    show("connecting…");
    const stream = HP.anyStream(topics, {}, {
      onEvent: (ev) => {
        list.prepend(row(ev));
        if (ev.topic === "catalog" || ev.topic === "kv") HP.refreshFacts();
        while (list.children.length > KEEP) list.lastElementChild.remove();
      },
      onComment: (text) => { if (text.startsWith("history kept")) note(text); },
      onOpen: (reconnect) => {
        show(`live: ${topics.join(", ")}`);
        if (reconnect) note(`reconnected; resumed after id ${stream.lastId ?? "–"}`);
      },
      onError: () => show("disconnected; reconnecting…"),
    });
    current = stream;
    form.dataset.subscribed = topics.join(",");
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); subscribe(true); });
  for (const box of form.querySelectorAll('input[name="topic"]')) box.addEventListener("change", () => subscribe(true));
  document.getElementById("clear").addEventListener("click", () => list.replaceChildren());

  const publish = document.getElementById("publish");
  publish.addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = document.getElementById("publish-status");
    const topic = publish.elements.topic.value.trim();
    const data = publish.elements.data.value;
    let type = "text/plain; charset=utf-8";
    try { JSON.parse(data); type = "application/json"; } catch (_) { /* text */ }
    try {
      const response = await fetch(`/v1/events/${topic.split("/").map(encodeURIComponent).join("/")}`, {
        method: "POST", body: data, credentials: "same-origin", headers: HP.headers({ "Content-Type": type }),
      });
      const text = (await response.text()).trim();
      out.textContent = response.ok ? `published as id ${JSON.parse(text).id}` : `${response.status}: ${text}`;
      if (response.ok && !chosen().some((t) => t === topic || (t.endsWith("*") && topic.startsWith(t.slice(0, -1))))) {
        more.value = more.value ? `${more.value}, ${topic}` : topic;
        subscribe(true);
      }
    } catch (err) {
      out.textContent = String(err);
    }
  });

  fromURL();
  subscribe(false);
})();
