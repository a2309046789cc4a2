"use strict";
// One machine: its Hardware, its workflows (linked to their pages) and its
// event log, newest first.
const { el, badge, fill } = Tinker;
const me = Tinker.objectOfPage();
const key = me.namespace + "/" + me.name;
/** Events shown: the page stays small. */
const EVENTS_SHOWN = 200;

document.getElementById("name").textContent = key;
document.title = "Tinker: " + me.name;

function describe(e) {
  const k = e.event || {};
  if (k.kind === "actionOutput") return "action " + k.actionIndex + " " + k.stream + ": " + k.line;
  return e.message;
}

async function load() {
  const updated = document.getElementById("updated");
  try {
    const [hws, wfs] = await Promise.all([Tinker.get("/api/v1/hardware"), Tinker.get("/api/v1/workflows")]);
    const hw = hws.map(h => h.value).find(h => (h.metadata.namespace || "default") === me.namespace && h.metadata.name === me.name);
    // The machine's own log, and its workers' (by MAC: the worker API logs
    // action output under the worker's id).
    const macs = hw ? (hw.spec.interfaces || []).map(i => (i.dhcp || {}).mac).filter(Boolean) : [];
    const logs = await Promise.all([key, ...macs].map(log =>
      Tinker.get("/api/v1/events/" + encodeURIComponent(log) + "?limit=" + EVENTS_SHOWN)));
    const events = logs.flat().sort((a, b) => a.seq - b.seq).slice(-EVENTS_SHOWN);
    const dl = document.getElementById("hardware");
    if (!hw) {
      dl.replaceChildren(el("dt", {}, "Hardware"), el("dd", { class: "error" }, "no Hardware " + key));
    } else {
      const rows = [];
      for (const i of hw.spec.interfaces || []) {
        const d = i.dhcp || {};
        rows.push(el("dt", {}, "interface"), el("dd", {}, [d.mac, (d.ip || {}).address, d.hostname].filter(Boolean).join(" · ")));
        rows.push(el("dt", {}, "netboot"), el("dd", {}, (i.netboot || {}).allowPXE ? "on" : "off"));
      }
      rows.push(el("dt", {}, "BMC"), el("dd", {}, hw.spec.bmcRef ? hw.spec.bmcRef.name : "none (powered by hand)"));
      dl.replaceChildren(...rows);
    }
    const mine = wfs.map(w => w.value).filter(o => (o.metadata.namespace || "default") === me.namespace && o.spec.hardwareRef === me.name);
    fill(document.getElementById("workflows"), mine.map(o => {
      const s = o.status || {};
      const acts = (s.tasks || []).flatMap(t => t.actions).map(a => el("span", { class: "s " + a.state, title: a.message }, a.name + ": " + a.state));
      return el("tr", { class: "wf" },
        el("td", {}, el("a", { href: "/status/workflows/" + Tinker.path(me.namespace, o.metadata.name) }, o.metadata.name)),
        el("td", {}, badge(s.state)), el("td", {}, acts.flatMap(a => [a, " "])), el("td", {}, s.reason));
    }));
    fill(document.getElementById("events"), events.slice().reverse().map(e =>
      el("tr", { class: "event" }, el("td", {}, new Date(e.at).toLocaleTimeString()), el("td", {}, e.source), el("td", {}, describe(e)))));
    updated.textContent = "updated " + new Date().toLocaleTimeString() + " · " + mine.length + " workflows, " + events.length + " events";
  } catch (e) {
    updated.textContent = "error: " + e.message;
  }
}
load(); setInterval(load, 2000);
