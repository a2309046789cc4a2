"use strict";
// After signing in, back to the page that sent the browser here (the server
// accepts only its own pages as `next`).
const next = new URLSearchParams(location.search).get("next");
if (next) document.querySelector("input[name=next]").value = next;
