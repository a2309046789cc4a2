"use strict";
// What every page shares: reading the operator API with the session's cookie,
// writing to it with the session's CSRF token, and building DOM from data
// (text nodes only: nothing the API says is parsed as HTML).

const Tinker = (() => {
  /** Sends a browser without a session to the sign-in form, and back here after. */
  function signIn() {
    location.replace("/login?next=" + encodeURIComponent(location.pathname));
    throw new Error("sign in first");
  }

  /** GET a JSON document of the operator API. */
  async function get(path) {
    const r = await fetch(path, { credentials: "same-origin" });
    if (r.status === 401) signIn();
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }

  let csrf = null;
  /** The session's CSRF token, asked for once. */
  async function csrfToken() {
    if (csrf === null) csrf = (await get("/api/v1/session")).csrfToken || "";
    return csrf;
  }

  /**
   * POST `body` as JSON with the session's CSRF token; the answer as
   * {ok, status, text, json}, whatever the status.
   */
  async function post(path, body) {
    const r = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": await csrfToken() },
      body: JSON.stringify(body ?? {}),
    });
    if (r.status === 401) signIn();
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch (e) { /* not JSON: the text is shown */ }
    return { ok: r.ok, status: r.status, text, json };
  }

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  /** An SVG element with attributes and children. */
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  /** A state badge. */
  function badge(state) {
    const s = state || "NEW";
    return el("span", { class: "s " + s }, s);
  }

  /** `{namespace}/{name}` of this page's object, from its address. */
  function objectOfPage() {
    const decode = p => { try { return decodeURIComponent(p); } catch (e) { return p; } };
    const parts = location.pathname.split("/").slice(3).map(decode);
    return { namespace: parts[0], name: parts[1] };
  }

  /** The path part for a `namespace/name` (each part escaped). */
  function path(namespace, name) {
    return encodeURIComponent(namespace) + "/" + encodeURIComponent(name);
  }

  /** Milliseconds as an operator reads them: `850 ms`, `12.5 s`, `3 min 5 s`, `2 h 4 min`. */
  function duration(ms) {
    if (ms < 1000) return Math.round(ms) + " ms";
    const s = ms / 1000;
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }

  /** Replaces a table body's rows. */
  function fill(table, rows) {
    table.tBodies[0].replaceChildren(...rows);
  }

  return { get, post, el, svg, badge, objectOfPage, path, duration, fill };
})();
