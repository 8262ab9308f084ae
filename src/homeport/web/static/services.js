// Services: every service, its instances and their health; live from the `catalog` topic.
"use strict";

(() => {
  const { el, getJSON } = HP;
  const root = document.getElementById("services");
  const filter = document.getElementById("filter");
  const noMatch = document.getElementById("no-match");
  const services = new Map(); // name -> [{Node, Service, Checks}]
  const open = new Set(); // instance keys whose checks are expanded

  const rank = { passing: 0, warning: 1, critical: 2 };
  function worst(checks) {
    let status = checks.length ? "passing" : "none";
    for (const c of checks) if ((rank[c.Status] ?? 2) > (rank[status] ?? -1)) status = c.Status;
    return status;
  }

  function matches(name, entries, words) {
    if (!words.length) return true;
    const hay = [name];
    for (const e of entries) {
      hay.push(e.Service.ID, e.Service.Address, e.Node.Node, e.Node.Address, String(e.Service.Port));
      hay.push(...(e.Service.Tags || []));
      hay.push(worst(e.Checks));
    }
    const text = hay.join(" ").toLowerCase();
    return words.every((w) => text.includes(w));
  }

  function checkView(c) {
    return el("div", { class: "check" },
      el("span", { class: `badge ${c.Status}` }, c.Status), " ",
      el("b", {}, c.Name || c.CheckID), " ",
      el("span", { class: "mono muted" }, c.CheckID), c.Type ? ` (${c.Type})` : "",
      c.Notes ? el("div", { class: "hint" }, c.Notes) : null,
      el("pre", {}, c.Output || "(no output yet)"));
  }

  function instanceRow(name, e) {
    const s = e.Service;
    const address = s.Address || e.Node.Address;
    const key = `${e.Node.Node}/${s.ID}`;
    const status = worst(e.Checks);
    const details = el("details", { class: "checks", open: open.has(key),
      ontoggle: () => { if (details.open) open.add(key); else open.delete(key); } },
      el("summary", {}, `${e.Checks.length} check${e.Checks.length === 1 ? "" : "s"}`),
      e.Checks.map(checkView));
    return el("tr", { class: "instance", "data-id": s.ID },
      el("td", {}, el("span", { class: `badge ${status}`, title: "health" }, status)),
      el("td", { class: "mono" }, s.ID),
      el("td", { class: "mono address" }, `${address}:${s.Port}`),
      el("td", { class: "mono" }, e.Node.Node),
      el("td", {}, (s.Tags || []).map((t) => el("span", { class: "tag" }, t))),
      el("td", {}, details));
  }

  function serviceCard(name, entries) {
    const counts = { passing: 0, warning: 0, critical: 0 };
    for (const e of entries) {
      const w = worst(e.Checks);
      if (w in counts) counts[w] += 1; else counts.passing += 1;
    }
    const tags = [...new Set(entries.flatMap((e) => e.Service.Tags || []))].sort();
    return el("section", { class: "service", "data-service": name },
      el("header", {},
        el("h2", {}, name),
        el("span", { class: "hint" }, `${entries.length} instance${entries.length === 1 ? "" : "s"}`),
        el("span", { class: "health" },
          Object.entries(counts).filter(([, n]) => n).map(([s, n]) =>
            el("span", { class: `badge ${s}`, title: `${n} ${s}` }, `${n} ${s}`))),
        el("span", {}, tags.map((t) => el("span", { class: "tag" }, t)))),
      el("table", { class: "instances" },
        el("thead", {}, el("tr", {}, ["health", "id", "address", "node", "tags", "checks"].map((h) => el("th", {}, h)))),
        el("tbody", {}, entries.map((e) => instanceRow(name, e)))));
  }

  function render() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const names = [...services.keys()].sort();
    const cards = names.filter((n) => matches(n, services.get(n), words))
      .map((n) => serviceCard(n, services.get(n)));
    root.replaceChildren(...cards);
    noMatch.hidden = cards.length > 0 || names.length === 0;
    root.dataset.ready = "1";
  }

  // One request for the whole catalog (Consul's UI node dump): each instance gets its
  // node's checks and its own, as /v1/health/service/NAME would give them.
  async function loadAll() {
    const dump = await getJSON("/v1/internal/ui/nodes");
    services.clear();
    for (const { Services: nodeServices, Checks: checks, ...node } of dump) {
      const nodeChecks = checks.filter((c) => !c.ServiceID);
      for (const service of nodeServices) {
        const own = checks.filter((c) => c.ServiceID === service.ID);
        if (!services.has(service.Service)) services.set(service.Service, []);
        services.get(service.Service).push({ Node: node, Service: service, Checks: nodeChecks.concat(own) });
      }
    }
    render();
  }

  // Any catalog event: read it all again, once per burst of events.
  const flush = HP.debounce(async () => {
    try { await loadAll(); } catch (err) { console.warn("catalog refresh", err); }
    HP.refreshFacts();
  }, 120);

  filter.value = new URLSearchParams(location.search).get("filter") || "";
  filter.addEventListener("input", () => {
    const url = new URL(location.href);
    if (filter.value) url.searchParams.set("filter", filter.value); else url.searchParams.delete("filter");
    history.replaceState(null, "", url);
    render();
  });

  HP.stream(["catalog"], {}, {
    onEvent: () => flush(),
    onOpen: (reconnect) => { if (reconnect) flush(); },
  });
  loadAll().catch((err) => root.replaceChildren(el("p", { class: "error" }, String(err))));
})();
