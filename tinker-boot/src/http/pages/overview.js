"use strict";
// The overview: every workflow and machine, linked to its own page.
const { el, badge, fill } = Tinker;

function workflowLink(o) {
  const ns = o.metadata.namespace || "default";
  return el("a", { href: "/status/workflows/" + Tinker.path(ns, o.metadata.name) }, o.metadata.name);
}

function machineLink(ns, name) {
  return el("a", { href: "/status/machines/" + Tinker.path(ns, name) }, name);
}

async function load() {
  const updated = document.getElementById("updated");
  try {
    const [wfs, hws] = await Promise.all([Tinker.get("/api/v1/workflows"), Tinker.get("/api/v1/hardware")]);
    fill(document.getElementById("workflows"), wfs.map(w => {
      const o = w.value, s = o.status || {};
      const ns = o.metadata.namespace || "default";
      const acts = (s.tasks || []).flatMap(t => t.actions)
        .map(a => el("span", { class: "s " + a.state, title: a.message }, a.name + ": " + a.state));
      return el("tr", { class: "wf" },
        el("td", {}, workflowLink(o)),
        el("td", {}, machineLink(ns, o.spec.hardwareRef)),
        el("td", {}, badge(s.state)),
        el("td", {}, acts.flatMap(a => [a, " "])),
        el("td", {}, s.reason));
    }));
    const rows = [];
    for (const m of hws) {
      const hw = m.value, i = (hw.spec.interfaces || [])[0] || {}, d = i.dhcp || {};
      const ns = hw.metadata.namespace || "default";
      let ev = [];
      try { ev = await Tinker.get("/api/v1/events/" + encodeURIComponent(ns + "/" + hw.metadata.name) + "?limit=3"); } catch (e) { /* shown without events */ }
      rows.push(el("tr", { class: "machine" },
        el("td", {}, machineLink(ns, hw.metadata.name)),
        el("td", {}, d.mac),
        el("td", {}, (d.ip || {}).address),
        el("td", {}, (i.netboot || {}).allowPXE ? "on" : "off"),
        el("td", {}, ev.slice(-3).map(e => el("div", { class: "ev" }, e.source + ": " + e.message)))));
    }
    fill(document.getElementById("machines"), rows);
    updated.textContent = "updated " + new Date().toLocaleTimeString() + " · " + wfs.length + " workflows, " + hws.length + " machines";
  } catch (e) {
    updated.textContent = "error: " + e.message;
  }
}
load(); setInterval(load, 1000);
