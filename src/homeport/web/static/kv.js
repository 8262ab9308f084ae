// KV: the keys as a tree (split on "/"), a value on click; live from the `kv` topic.
// Keys can be created, edited and deleted.  Every write is a check-and-set against the
// index the page showed (as Consul's UI does), so nobody else's change is overwritten.
"use strict";

(() => {
  const { el, getJSON } = HP;
  const treeBox = document.getElementById("kv-tree");
  const valueBox = document.getElementById("kv-value");
  let entries = new Map(); // key -> entry
  const expanded = new Set([""]);
  let editor = null; // {key, index} while the form is open: live reloads leave it alone

  function keyPath(key) { return `/v1/kv/${key.split("/").map(encodeURIComponent).join("/")}`; }

  function decode(b64) {
    if (b64 === null || b64 === undefined) return { text: null, bytes: 0 };
    const raw = atob(b64);
    const bytes = Uint8Array.from(raw, (c) => c.charCodeAt(0));
    try {
      return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes), bytes: bytes.length };
    } catch (_) {
      const hex = [...bytes.slice(0, 512)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
      return { text: null, hex, bytes: bytes.length };
    }
  }

  function build() {
    const root = { children: new Map(), key: null, path: "" };
    for (const key of [...entries.keys()].sort()) {
      const parts = key.split("/");
      let node = root;
      let path = "";
      parts.forEach((part, i) => {
        path += (i ? "/" : "") + part;
        const last = i === parts.length - 1;
        const name = last ? part : `${part}/`;
        if (!node.children.has(name)) node.children.set(name, { children: new Map(), key: null, path: last ? path : `${path}/` });
        node = node.children.get(name);
        if (last) node.key = key;
      });
    }
    return root;
  }

  function selected() { return decodeURIComponent(location.hash.slice(1)); }

  function view(node) {
    const items = [];
    for (const [name, child] of node.children) {
      if (child.children.size) {
        const d = el("details", { open: expanded.has(child.path),
          ontoggle: () => { if (d.open) expanded.add(child.path); else expanded.delete(child.path); } },
          el("summary", {}, name), view(child));
        items.push(el("li", { class: "folder" }, d));
        if (child.key !== null) items.push(leaf(child.key, name));
      } else if (child.key !== null) {
        items.push(leaf(child.key, name));
      }
    }
    return el("ul", {}, items);
  }

  function leaf(key, name) {
    return el("li", { class: "key" }, el("a", { href: `#${encodeURIComponent(key)}`, "data-key": key,
      "aria-current": key === selected() ? "true" : null }, name || "(empty)"));
  }

  let shownKey = null; // the key whose value the box shows

  function showValue() {
    const key = selected();
    for (const a of treeBox.querySelectorAll("a[data-key]")) {
      if (a.dataset.key === key) a.setAttribute("aria-current", "true"); else a.removeAttribute("aria-current");
    }
    if (editor && (editor.key === key || editor.index === 0)) return; // the form keeps what was typed
    editor = null;
    if (!key) return;
    const entry = entries.get(key);
    if (!entry) { valueBox.replaceChildren(el("p", { class: "empty" }, `No key ${key}.`)); return; }
    // open the folders on the way to the key
    let path = "";
    for (const part of key.split("/").slice(0, -1)) { path += `${part}/`; expanded.add(path); }
    // A reload (a kv event) redraws the key; what was just said about it stays said.
    const previous = document.getElementById("kv-status");
    const status = el("p", { class: "status", id: "kv-status", role: "status" });
    if (previous && shownKey === key) {
      status.className = previous.className;
      status.textContent = previous.textContent;
    }
    const value = decode(entry.Value);
    let shown = value.text;
    if (shown !== null) { try { shown = JSON.stringify(JSON.parse(shown), null, 2); } catch (_) { /* text */ } }
    valueBox.replaceChildren(
      el("h2", { class: "mono", id: "kv-key" }, key),
      el("dl", {},
        el("dt", {}, "size"), el("dd", {}, `${value.bytes} bytes`),
        el("dt", {}, "flags"), el("dd", {}, entry.Flags),
        el("dt", {}, "create index"), el("dd", {}, entry.CreateIndex),
        el("dt", {}, "modify index"), el("dd", {}, entry.ModifyIndex),
        entry.Session ? [el("dt", {}, "session"), el("dd", {}, entry.Session)] : null),
      value.text !== null ? el("pre", { id: "kv-text" }, shown)
        : value.hex ? el("pre", { id: "kv-text", class: "hex" }, value.hex) : el("p", { class: "empty" }, "(no value)"),
      el("p", { class: "actions" },
        value.hex ? el("span", { class: "hint" }, "A binary value: change it with curl --data-binary.")
          : el("button", { type: "button", id: "kv-edit", onclick: () => edit(entry, value.text || "") }, "Edit"),
        el("button", { type: "button", id: "kv-delete", onclick: () => remove(entry) }, "Delete"),
        el("a", { href: `${keyPath(key)}?raw` }, "raw value")),
      status);
    shownKey = key;
  }

  function fail(status, text) { status.className = "status error"; status.textContent = text; }

  /** Ask the API; the answer's text, or an Error with the status and the reason. */
  async function write(method, key, query, body) {
    const response = await fetch(`${keyPath(key)}?${new URLSearchParams(query)}`, {
      method, body, credentials: "same-origin", headers: HP.headers({ "Content-Type": "text/plain; charset=utf-8" }),
    });
    const text = (await response.text()).trim();
    if (!response.ok) throw new Error(`${response.status}: ${text || response.statusText}`);
    return text;
  }

  /** The form for a new key (entry null) or for changing one. */
  function edit(entry, text) {
    const creating = entry === null;
    editor = { key: creating ? null : entry.Key, index: creating ? 0 : entry.ModifyIndex };
    const folder = (() => { const k = selected(); return k.includes("/") ? k.slice(0, k.lastIndexOf("/") + 1) : ""; })();
    const keyInput = el("input", { id: "kv-form-key", name: "key", required: true, autocomplete: "off",
      value: creating ? folder : entry.Key, readOnly: !creating, spellcheck: "false" });
    const valueInput = el("textarea", { id: "kv-form-value", name: "value", rows: 12, spellcheck: "false" });
    valueInput.value = text;
    const status = el("p", { class: "status", id: "kv-status", role: "status" });
    const form = el("form", { id: "kv-form", class: "kv-form", autocomplete: "off" },
      el("h2", {}, creating ? "New key" : "Edit"),
      el("label", {}, "Key", keyInput),
      el("label", {}, "Value", valueInput),
      el("p", { class: "actions" },
        el("button", { type: "submit", id: "kv-save" }, creating ? "Create" : "Save"),
        el("button", { type: "button", id: "kv-cancel", onclick: () => { editor = null; showValue(); } }, "Cancel")),
      status);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const key = keyInput.value.replace(/^\/+/, "");
      if (!key) { fail(status, "A key needs a name."); return; }
      const query = { cas: String(editor.index) };
      if (!creating && entry.Flags) query.flags = String(entry.Flags);
      try {
        if (await write("PUT", key, query, valueInput.value) !== "true") {
          fail(status, creating ? `Not created: ${key} already exists.`
            : `Not saved: ${key} was changed since you opened it. Cancel to see the new value.`);
          return;
        }
      } catch (err) { fail(status, `Not saved: ${err.message}`); return; }
      editor = null;
      history.replaceState(null, "", `#${encodeURIComponent(key)}`);
      await load();
    });
    valueBox.replaceChildren(form);
    (creating ? keyInput : valueInput).focus();
  }

  async function remove(entry) {
    if (!confirm(`Delete ${entry.Key}?`)) return;
    const report = (text) => fail(document.getElementById("kv-status")
      || valueBox.appendChild(el("p", { class: "status", id: "kv-status", role: "status" })), text);
    let deleted;
    try {
      deleted = await write("DELETE", entry.Key, { cas: String(entry.ModifyIndex) }) === "true";
    } catch (err) { report(`Not deleted: ${err.message}`); return; }
    if (!deleted) {
      await load(); // the value as it is now, then why nothing happened
      report(`Not deleted: ${entry.Key} was changed since you opened it.`);
      return;
    }
    history.replaceState(null, "", location.pathname + location.search);
    await load();
    valueBox.replaceChildren(el("p", { class: "empty" }, `Deleted ${entry.Key}.`));
  }

  async function load() {
    const response = await fetch("/v1/kv/?recurse", { headers: HP.headers(), credentials: "same-origin" });
    if (response.status === 404) entries = new Map();
    else if (!response.ok) throw new Error(`${response.status} ${(await response.text()).trim()}`);
    else entries = new Map((await response.json()).map((e) => [e.Key, e]));
    render();
  }

  function render() {
    const key = selected();
    if (key) {
      let path = "";
      for (const part of key.split("/").slice(0, -1)) { path += `${part}/`; expanded.add(path); }
    }
    treeBox.replaceChildren(entries.size ? view(build()) : el("p", { class: "empty" }, "The store is empty."));
    treeBox.dataset.ready = "1";
    showValue();
  }

  window.addEventListener("hashchange", () => { editor = null; showValue(); });
  document.getElementById("kv-new").addEventListener("click", () => edit(null, ""));
  const reload = HP.debounce(() => { load().catch(console.warn); HP.refreshFacts(); }, 150);
  HP.stream(["kv"], {}, { onEvent: reload, onOpen: (reconnect) => { if (reconnect) reload(); } });
  load().catch((err) => treeBox.replaceChildren(el("p", { class: "error" }, String(err))));
})();
