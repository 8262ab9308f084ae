// KV: the keys as a tree (split on "/"), a value on click; live from the `kv` topic.
"use strict";

(() => {
  const { el, getJSON } = HP;
  const treeBox = document.getElementById("kv-tree");
  const valueBox = document.getElementById("kv-value");
  let entries = new Map(); // key -> entry
  const expanded = new Set([""]);

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

  function showValue() {
    const key = selected();
    for (const a of treeBox.querySelectorAll("a[data-key]")) {
      if (a.dataset.key === key) a.setAttribute("aria-current", "true"); else a.removeAttribute("aria-current");
    }
    if (!key) return;
    const entry = entries.get(key);
    if (!entry) { valueBox.replaceChildren(el("p", { class: "empty" }, `No key ${key}.`)); return; }
    // open the folders on the way to the key
    let path = "";
    for (const part of key.split("/").slice(0, -1)) { path += `${part}/`; expanded.add(path); }
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
      el("p", {}, el("a", { href: `/v1/kv/${key.split("/").map(encodeURIComponent).join("/")}?raw` }, "raw value")));
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

  window.addEventListener("hashchange", showValue);
  const reload = HP.debounce(() => { load().catch(console.warn); HP.refreshFacts(); }, 150);
  HP.stream(["kv"], {}, { onEvent: reload, onOpen: (reconnect) => { if (reconnect) reload(); } });
  load().catch((err) => treeBox.replaceChildren(el("p", { class: "error" }, String(err))));
})();
