"use strict";
// One machine: its Hardware, its workflows (linked to their pages) and its
// event log, newest first.
const { el, badge, fill } = Tinker;
const me = Tinker.objectOfPage();
const key = me.namespace + "/" + me.name;
/** Events shown: the page stays small. */
const EVENTS_SHOWN = 200;
/** The annotation where the agent's attributes are kept (tink-agent's inventory). */
const AGENT_ATTRIBUTES = "tinkerbell.org/agent-attributes";
/** Rows shown per kind of device (disks, NICs, ...): a machine's agent says how many it has. */
const DEVICES_SHOWN = 32;

document.getElementById("name").textContent = key;
document.title = "Tinker: " + me.name;

function describe(e) {
  const k = e.event || {};
  if (k.kind === "actionOutput") return "action " + k.actionIndex + " " + k.stream + ": " + k.line;
  return e.message;
}

/** The parts given, joined: empty and missing ones left out. */
function join(...parts) {
  return parts.filter(p => p !== undefined && p !== null && p !== "").map(String).join(" · ");
}

/** The inventory rows of the agent's attributes (Tinkerbell's field names). */
function inventoryRows(hw) {
  const raw = ((hw && hw.metadata.annotations) || {})[AGENT_ATTRIBUTES];
  const row = (part, text, cls) => el("tr", { class: cls || "part" }, el("td", {}, part), el("td", {}, text));
  if (!raw) return [row("none", "no agent has reported this machine's inventory yet", "none")];
  let a;
  try { a = JSON.parse(raw); } catch (e) { return [row("none", "the reported inventory is not JSON", "none error")]; }
  if (typeof a !== "object" || a === null) return [row("none", "the reported inventory is not an object", "none error")];
  const one = v => (typeof v === "object" && v !== null && !Array.isArray(v)) ? v : {};
  const many = v => Array.isArray(v) ? v.map(one) : [];
  const rows = [];
  const p = one(a.product), bb = one(a.baseboard), bios = one(a.bios), ch = one(a.chassis);
  const serial = s => s ? "serial " + s : undefined;
  if (Object.keys(p).length) rows.push(row("product", join(p.vendor, p.name, serial(p.serialNumber))));
  if (Object.keys(bb).length) rows.push(row("baseboard", join(bb.vendor, bb.product, bb.version, serial(bb.serialNumber))));
  if (Object.keys(bios).length) rows.push(row("BIOS", join(bios.vendor, bios.version, bios.releaseDate)));
  if (Object.keys(ch).length) rows.push(row("chassis", join(ch.vendor, serial(ch.serial))));
  const cpu = one(a.cpu);
  if (Object.keys(cpu).length) {
    // Processors of one model, counted: a two-socket machine is one row.
    const models = new Map();
    for (const pr of many(cpu.processors)) {
      const m = join(pr.vendor, pr.model);
      if (m) models.set(m, (models.get(m) || 0) + 1);
    }
    const named = [...models].slice(0, DEVICES_SHOWN).map(([m, n]) => (n > 1 ? n + " × " : "") + m);
    rows.push(row("CPU", join(cpu.totalCores !== undefined ? cpu.totalCores + " cores" : undefined,
      cpu.totalThreads !== undefined ? cpu.totalThreads + " threads" : undefined, ...named)));
  }
  const mem = one(a.memory);
  if (Object.keys(mem).length) rows.push(row("memory", join(mem.total, mem.usable ? mem.usable + " usable" : undefined)));
  const devices = (part, list, describe) => {
    for (const d of list.slice(0, DEVICES_SHOWN)) rows.push(row(part, describe(d)));
    if (list.length > DEVICES_SHOWN) rows.push(row(part, "and " + (list.length - DEVICES_SHOWN) + " more"));
  };
  devices("disk", many(a.blockDevices), d => join(d.name, d.size, d.driveType, d.controllerType, d.vendor, d.model, serial(d.serialNumber)));
  devices("NIC", many(a.networkInterfaces), n => join(n.name, n.mac, n.speed));
  devices("GPU", many(a.gpuDevices), g => join(g.vendor, g.product, g.driver));
  const pci = many(a.pciDevices);
  if (pci.length) rows.push(row("PCI", pci.length + " devices"));
  return rows.length ? rows : [row("none", "the reported inventory is empty", "none")];
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
    fill(document.getElementById("inventory"), inventoryRows(hw));
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
