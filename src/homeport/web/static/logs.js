// Logs: history pages from /v1/logs and the live tail from /v1/events?topic=logs, one filter.
"use strict";

(() => {
  const { el, getJSON, clock } = HP;
  const PAGE = 100;
  const KEEP = 2000; // rows kept on screen; older ones go back behind "Older records"
  const FILTERS = ["level", "logger", "q", "since", "until"];

  function levelClass(levelno) {
    if (levelno >= 50) return "critical";
    if (levelno >= 40) return "error";
    if (levelno >= 30) return "warning";
    if (levelno >= 20) return "info";
    return "debug";
  }

  function present(value) {
    return value !== null && value !== undefined && value !== "" && value !== "None";
  }

  function fieldTable(record) {
    const rows = [];
    const skip = new Set(["extra", "id"]);
    for (const [k, v] of Object.entries(record)) {
      if (skip.has(k)) continue;
      rows.push([k, v]);
    }
    for (const [k, v] of Object.entries(record.extra || {})) rows.push([`extra.${k}`, v]);
    return el("table", { class: "fieldtable" }, el("tbody", {}, rows.map(([k, v]) =>
      el("tr", {}, el("th", {}, k), el("td", {}, typeof v === "string" ? v : JSON.stringify(v))))));
  }

  function recordLink(id) { return `${HP.base}/logs/${id}`; }

  function recordRow(r, fresh) {
    const traceback = present(r.exc_text) ? r.exc_text : present(r.stack_info) ? r.stack_info : null;
    const extras = Object.entries(r.extra || {});
    const table = el("div", { class: "fieldbox", hidden: true });
    const toggle = el("button", { type: "button", class: "toggle", "aria-expanded": "false", title: "every field",
      onclick: () => {
        if (!table.firstChild) table.append(fieldTable(r));
        table.hidden = !table.hidden;
        toggle.setAttribute("aria-expanded", String(!table.hidden));
      } }, "fields");
    return el("li", { class: `rec ${levelClass(r.levelno)}${fresh ? " fresh" : ""}`, id: `r${r.id}`, "data-id": r.id, "data-level": r.levelname },
      el("span", { class: "time", title: new Date(r.created * 1000).toISOString() }, clock(r.created, true)),
      el("span", { class: "lvl" }, r.levelname),
      el("span", { class: "logger", title: r.name }, r.name),
      el("span", { class: "msg" }, r.message),
      el("span", { class: "tools" }, toggle,
        el("a", { class: "link", href: recordLink(r.id), title: "a link to this record" }, `#${r.id}`)),
      extras.length ? el("span", { class: "fields" }, extras.slice(0, 6).map(([k, v]) =>
        el("span", { class: "tag" }, `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`))) : null,
      traceback ? el("details", { class: "traceback" }, el("summary", {}, "traceback"), el("pre", {}, traceback)) : null,
      table);
  }

  // -- one record (/ui/logs/<id>) -------------------------------------------------------
  const single = document.getElementById("record");
  if (single) {
    const id = Number(single.dataset.id);
    getJSON(`/v1/logs?order=asc&limit=1&after=${id - 1}`).then((page) => {
      const r = page.records[0];
      if (!r || r.id !== id) {
        single.replaceChildren(el("p", { class: "empty" }, "No such record (it may have been pruned)."));
        return;
      }
      single.replaceChildren(
        el("ol", { class: "records" }, recordRow(r, false)),
        el("h2", {}, "Fields"),
        fieldTable(r));
      const traceback = single.querySelector("details.traceback");
      if (traceback) traceback.open = true;
    }).catch((err) => single.replaceChildren(el("p", { class: "error" }, String(err))));
    return;
  }

  // -- the list -------------------------------------------------------------------------
  const form = document.getElementById("log-filter");
  const list = document.getElementById("records");
  const older = document.getElementById("older");
  const pauseButton = document.getElementById("pause");
  const status = document.getElementById("tail-status");
  const errorBox = document.getElementById("log-error");
  const none = document.getElementById("no-records");

  let tail = null;
  let generation = 0;
  let nextAfter = null;
  let newest = 0; // the highest record id shown or skipped
  let paused = false;
  let held = []; // records that arrived while paused (newest last)
  let live = [];

  /** "user=alice id=42 note=\"a b\"" -> [["user","alice"], ...] */
  function parseFields(text) {
    const out = [];
    const re = /([^\s=,]+)=(?:"([^"]*)"|([^\s,]*))/g;
    let m;
    while ((m = re.exec(text)) !== null) out.push([m[1], m[2] !== undefined ? m[2] : m[3]]);
    return out;
  }

  function filterParams() {
    const q = new URLSearchParams();
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value) q.set(name, value);
    }
    for (const [k, v] of parseFields(form.elements.fields.value)) q.append(`field.${k}`, v);
    return q;
  }

  function loadFormFromURL() {
    const q = new URLSearchParams(location.search);
    for (const name of FILTERS) form.elements[name].value = q.get(name) || "";
    const fields = [];
    for (const [k, v] of q) if (k.startsWith("field.")) fields.push(`${k.slice(6)}=${/[\s,]/.test(v) ? `"${v}"` : v}`);
    form.elements.fields.value = fields.join(" ");
  }

  function showStatus() {
    const parts = [];
    if (!tail) parts.push("");
    else if (paused) parts.push(`paused${held.length ? ` · ${held.length} new` : ""}`);
    else parts.push(tail.state === "open" ? "live" : "reconnecting…");
    status.textContent = parts.join(" ");
    none.hidden = list.children.length > 0;
  }

  function trim() {
    while (list.children.length > KEEP) {
      list.lastElementChild.remove();
      nextAfter = Number(list.lastElementChild.dataset.id);
      older.hidden = false;
    }
  }

  function prepend(records) {
    // records: oldest first; each goes on top
    for (const r of records) {
      if (r.id <= newest) continue;
      newest = r.id;
      list.prepend(recordRow(r, true));
    }
    trim();
    showStatus();
  }

  function onLive(record, gen) {
    if (gen !== generation || !record || typeof record !== "object") return;
    if (live !== null) { live.push(record); return; } // history still loading
    if (paused) { held.push(record); showStatus(); return; }
    prepend([record]);
  }

  async function apply(pushURL) {
    generation += 1;
    const gen = generation;
    if (tail) tail.close();
    list.replaceChildren();
    held = []; live = []; newest = 0; nextAfter = null;
    older.hidden = true;
    errorBox.hidden = true;
    const params = filterParams();
    if (pushURL) {
      const url = new URL(location.href);
      url.search = params.toString();
      history.replaceState(null, "", url);
    }
    // The tail opens first and holds what arrives while the first page loads; records
    // in both are shown once (by id), so nothing falls between history and live.
    tail = HP.stream(["logs"], params, {
      onEvent: ({ data }) => onLive(data, gen),
      onOpen: showStatus,
      onError: showStatus,
    });
    try {
      const page = await getJSON(`/v1/logs?${params}&limit=${PAGE}`);
      if (gen !== generation) return;
      const records = page.records; // newest first
      for (const r of records) list.append(recordRow(r, false));
      newest = records.length ? records[0].id : 0;
      nextAfter = page.next_after;
      older.hidden = nextAfter === null;
    } catch (err) {
      if (gen !== generation) return;
      errorBox.textContent = String(err.message || err);
      errorBox.hidden = false;
      tail.close();
      tail = null;
    }
    const waiting = live || [];
    live = null;
    waiting.sort((a, b) => a.id - b.id);
    if (paused) held.push(...waiting); else prepend(waiting);
    showStatus();
  }

  older.addEventListener("click", async () => {
    if (nextAfter === null) return;
    older.disabled = true;
    try {
      const page = await getJSON(`/v1/logs?${filterParams()}&limit=${PAGE}&after=${nextAfter}`);
      for (const r of page.records) {
        if (!document.getElementById(`r${r.id}`)) list.append(recordRow(r, false));
      }
      nextAfter = page.next_after;
      older.hidden = nextAfter === null;
    } catch (err) {
      errorBox.textContent = String(err.message || err);
      errorBox.hidden = false;
    } finally {
      older.disabled = false;
      showStatus();
    }
  });

  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.setAttribute("aria-pressed", String(paused));
    pauseButton.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      const waiting = held;
      held = [];
      prepend(waiting);
    }
    showStatus();
  });

  form.addEventListener("submit", (e) => { e.preventDefault(); apply(true); });
  form.elements.level.addEventListener("change", () => apply(true));
  loadFormFromURL();
  apply(false);
  setInterval(showStatus, 2000);
})();
