"use strict";
// One workflow: its timeline (a bar per step on a time axis, drawn from
// /api/v1/workflows/{ns}/{name}/timeline: the server decides, this page only
// draws), why it is pending, each action's output, and the retry, cancel and
// re-run buttons.
const { el, svg } = Tinker;
const me = Tinker.objectOfPage();
const api = "/api/v1/workflows/" + Tinker.path(me.namespace, me.name);

/** Output lines kept per action: the page's memory stays bounded. */
const LINES_PER_ACTION = 200;
/** Events read per poll (the API's `limit`). */
const EVENTS_PER_POLL = 2000;

document.getElementById("name").textContent = me.namespace + "/" + me.name;
document.title = "Tinker: " + me.name;

let last = null; // the last timeline answer
let outputDone = false; // the workflow ended and its output was read after
let polling = false;

const ms = t => Date.parse(t);
/** The badge colour of each outcome. */
const BADGE = { done: "SUCCESS", running: "RUNNING", failed: "FAILED", pending: "PENDING", skipped: "PENDING", notRecorded: "PENDING" };

/** The timeline as SVG: one row per span, bars on a shared time axis. */
function draw(tl) {
  const spans = tl.spans;
  const W = 960, labelW = 170, noteW = 230, rowH = 24, top = 24;
  const x0 = labelW, x1 = W - noteW;
  const now = ms(tl.now);
  const times = spans.flatMap(s => [s.start, s.end]).filter(Boolean).map(ms);
  const running = spans.some(s => s.outcome === "running");
  const t0 = tl.start ? Math.min(ms(tl.start), ...times) : Math.min(now, ...times);
  const ended = ["SUCCESS", "FAILED", "TIMEOUT"].includes(tl.state);
  // While it runs or waits, the axis reaches now: the wait is time spent too.
  let tEnd = Math.max(t0, ...times, running || !ended ? now : t0);
  if (tEnd - t0 < 100) tEnd = t0 + 100;
  const x = t => x0 + (t - t0) / (tEnd - t0) * (x1 - x0);
  const H = top + spans.length * rowH + 8;
  const root = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "timeline" });

  // The axis: a tick every 10 ms, ..., 1, 2, 5, 10, ... seconds, at most eight.
  const span = (tEnd - t0) / 1000;
  const steps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400];
  const step = steps.find(s => span / s <= 8) || 86400;
  for (let n = 0; n * step <= span + 1e-9; n++) {
    const s = n * step;
    const tx = x(t0 + s * 1000);
    root.append(svg("line", { class: "axis", x1: tx, x2: tx, y1: top - 6, y2: H - 4 }));
    root.append(svg("text", { class: "tick", x: tx, y: top - 10, "text-anchor": "middle" }, "+" + Tinker.duration(s * 1000)));
  }

  spans.forEach((s, i) => {
    const y = top + i * rowH;
    const row = svg("g", { class: "row", "data-step": s.step, "data-outcome": s.outcome });
    const stopped = tl.stoppedAt === i;
    if (stopped) row.append(svg("rect", { class: "row-stopped", x: 0, y: y, width: W, height: rowH }));
    const name = s.label + (s.attempts > 1 ? " ×" + s.attempts : "");
    row.append(svg("text", { class: "label " + s.outcome, x: 4, y: y + 16 }, name));
    let note = "";
    if (s.start) {
      const a = ms(s.start);
      const b = s.end ? ms(s.end) : (s.outcome === "running" ? now : a);
      const bx = x(a), bw = Math.max(3, x(b) - bx);
      const title = [s.label, s.outcome, "from " + new Date(a).toLocaleTimeString(),
        s.end ? "took " + Tinker.duration(b - a) : "", s.attempts > 1 ? s.attempts + " attempts" : "",
        s.detail || ""].filter(Boolean).join("\n");
      row.append(svg("rect", { class: "bar " + s.outcome, x: bx, y: y + 4, width: bw, height: rowH - 8, rx: 2 },
        svg("title", {}, title)));
      note = b > a ? Tinker.duration(b - a) : "";
    } else if (stopped && s.outcome === "pending" && !ended) {
      // Waiting for this step: since the last thing that happened, until now.
      const since = Math.max(t0, ...spans.slice(0, i).flatMap(p => [p.start, p.end]).filter(Boolean).map(ms));
      row.append(svg("rect", { class: "bar waiting", x: x(since), y: y + 4, width: Math.max(3, x(now) - x(since)), height: rowH - 8, rx: 2 },
        svg("title", {}, s.label + ": waiting for " + Tinker.duration(now - since))));
      note = "waiting " + Tinker.duration(now - since);
    } else if (s.outcome === "notRecorded") {
      note = "passed; not in the event log";
    } else if (s.outcome === "pending") {
      note = "not reached";
    }
    if (s.detail) note += (note ? " · " : "") + (s.detail.length > 34 ? s.detail.slice(0, 33) + "…" : s.detail);
    if (stopped) note = (s.outcome === "failed" ? "◀ stopped here" : "◀ now here") + (note ? " · " + note : "");
    row.append(svg("text", { class: "note", x: x1 + 8, y: y + 16 }, note));
    root.append(row);
  });
  if (!ended && now <= tEnd) {
    root.append(svg("line", { class: "now", x1: x(now), x2: x(now), y1: top - 6, y2: H - 4 }));
  }
  document.getElementById("timeline").replaceChildren(root);
}

/** The header line and the diagnosis. */
function summary(answer) {
  const tl = answer.timeline;
  const [mns, mname] = tl.machine.split("/");
  const where = tl.stoppedAt === null || tl.stoppedAt === undefined ? null : tl.spans[tl.stoppedAt];
  document.getElementById("summary").replaceChildren(
    Tinker.badge(tl.state), " on machine ",
    el("a", { href: "/status/machines/" + Tinker.path(mns, mname) }, mname),
    tl.reason ? el("span", { class: "error" }, " · " + tl.reason) : "",
    where ? " · " + (where.outcome === "failed" ? "stopped at " : "now at ") + where.label : "");
  const d = document.getElementById("diagnosis");
  if (answer.diagnosis) {
    d.hidden = false;
    d.textContent = "Waiting: " + answer.diagnosis.explanation;
  } else {
    d.hidden = true;
    d.textContent = "";
  }
  // The retry list: each action once, the operator's choice kept.
  const select = document.getElementById("retry-action");
  const actions = tl.spans.filter(s => s.step === "action").map(s => s.name);
  const have = [...select.options].slice(1).map(o => o.value);
  if (have.join("\n") !== actions.join("\n")) {
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "the failed action"),
      ...actions.map(a => el("option", { value: a }, a)));
    select.value = actions.includes(chosen) ? chosen : "";
  }
}

/**
 * Each action's last output lines, read from the event logs that hold them
 * (the machine's, and its worker's: the worker API logs output under the
 * worker's id).
 */
async function output(tl) {
  const logs = await Promise.all(tl.logs.map(log =>
    Tinker.get("/api/v1/events/" + encodeURIComponent(log) + "?limit=" + EVENTS_PER_POLL)));
  const events = logs.flat().sort((a, b) => a.seq - b.seq);
  const lines = new Map();
  for (const e of events) {
    const k = e.event || {};
    if (e.workflow !== tl.workflow || k.kind !== "actionOutput") continue;
    if (!lines.has(k.actionIndex)) lines.set(k.actionIndex, []);
    const mine = lines.get(k.actionIndex);
    mine.push(k);
    if (mine.length > LINES_PER_ACTION) mine.shift();
  }
  const box = document.getElementById("output");
  const sections = tl.spans.filter(s => s.step === "action").map(s => {
    const took = s.start && s.end ? ", took " + Tinker.duration(ms(s.end) - ms(s.start)) : "";
    const pre = el("pre", { class: "out", "data-action": s.name },
      (lines.get(s.index) || []).map(l => el("span", { class: l.stream }, l.line + "\n")));
    return el("section", { class: "action", id: "action-" + s.index },
      el("h3", {}, (s.index + 1) + ". " + s.name + " ", el("span", { class: "s " + (BADGE[s.outcome] || "PENDING") }, s.outcome),
        " attempt " + s.attempts + took),
      s.detail ? el("p", { class: "ev" }, s.detail) : "", pre);
  });
  // Keep where the operator scrolled a running action's output to.
  const scrolled = new Map([...box.querySelectorAll("pre.out")].map(p => [p.dataset.action, p.scrollTop + p.clientHeight >= p.scrollHeight - 4]));
  box.replaceChildren(...sections);
  for (const p of box.querySelectorAll("pre.out")) {
    if (scrolled.get(p.dataset.action) !== false) p.scrollTop = p.scrollHeight;
  }
}

async function load() {
  if (polling) return;
  polling = true;
  try {
    const answer = await Tinker.get(api + "/timeline");
    last = answer;
    summary(answer);
    draw(answer.timeline);
    const ended = ["SUCCESS", "FAILED", "TIMEOUT"].includes(answer.timeline.state);
    if (!outputDone) await output(answer.timeline);
    outputDone = ended;
  } catch (e) {
    document.getElementById("summary").textContent = "error: " + e.message;
  } finally {
    polling = false;
  }
}

/** A button's request, and the server's answer shown to the operator. */
async function act(verb, body) {
  const shown = document.getElementById("answer");
  const buttons = document.querySelectorAll("#act button");
  buttons.forEach(b => { b.disabled = true; });
  shown.className = "";
  shown.textContent = verb + "…";
  try {
    const r = await Tinker.post(api + "/" + verb, body);
    const j = r.json;
    let said = r.text.trim();
    if (j && typeof j === "object") {
      const detail = typeof j.detail === "string" ? j.detail : (j.detail ? JSON.stringify(j.detail) : "");
      said = j.title ? j.title + (detail ? ": " + detail : "") : JSON.stringify(j);
    }
    shown.className = r.ok ? "ok" : "error";
    shown.textContent = verb + ": " + (r.ok ? "done" : "refused (HTTP " + r.status + ")") + (said ? ": " + said : "");
    outputDone = false;
    await load();
  } catch (e) {
    shown.className = "error";
    shown.textContent = verb + ": " + e.message;
  } finally {
    buttons.forEach(b => { b.disabled = false; });
  }
}

document.getElementById("retry").addEventListener("click", () => {
  const action = document.getElementById("retry-action").value;
  act("retry", action ? { action } : {});
});
document.getElementById("cancel").addEventListener("click", () => act("cancel", {}));
document.getElementById("rerun").addEventListener("click", () => act("rerun", {}));

load(); setInterval(load, 2000);
