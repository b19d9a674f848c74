// SpiderGAN review page: keyboard-first accept/reject of detections, crops and pairs.
// State lives on the server (data/review/decisions.jsonl); this page shows one window of
// items, applies decisions optimistically and sends them in order, and polls the log version
// so that another tab's decisions show up here.
"use strict";

const TOKEN = document.querySelector('meta[name="review-token"]').content;
const PER_PAGE = 200;
const POLL_MS = 2000;
const VIEWS = {
  detections: { kind: "detection", api: "/api/detections", conf: true, unit: "images",
    statuses: ["all", "undecided", "accept", "reject"], decisions: ["accept", "reject"] },
  crops: { kind: "crop", api: "/api/crops", conf: true, unit: "crops",
    statuses: ["all", "undecided", "accept", "reject"], decisions: ["accept", "reject"] },
  pairs: { kind: "pair", api: "/api/pairs", conf: false, unit: "pairs",
    statuses: ["all", "undecided", "copy", "ok"], decisions: ["copy", "ok"] },
};
const WORD = { accept: "accepted", reject: "rejected", copy: "copy", ok: "ok", undecided: "undecided", all: "all" };
const MARK = { accept: "✓", reject: "✗", copy: "copy", ok: "ok" };
const HELP = {
  detections: [["j k ← →", "box"], ["↑ ↓", "image"], ["a", "accept"], ["r", "reject"],
    ["x", "no spider in this image"], ["u", "undo"], ["/", "find"],
    ["drag corners", "adjust box (saves it accepted)"], ["n p", "page"], ["1 2 3", "views"]],
  crops: [["j k ← →", "move"], ["↑ ↓", "row"], ["a", "accept"], ["r", "reject"], ["u", "undo"], ["/", "find"],
    ["n p", "page"], ["1 2 3", "views"]],
  pairs: [["j k ↑ ↓", "move"], ["c r", "copy (memorized)"], ["o a", "ok (novel)"], ["u", "undo"],
    ["n p", "page"], ["1 2 3", "views"]],
};

const S = {
  view: "detections", status: "all", min: "", max: "", q: "", start: 0,
  list: null,        // the server's answer for the current window
  cursor: [],        // flat list of selectable entries {i, b?, key}
  cur: 0,
  undo: [],          // this tab's decisions, newest last: {view, kind, key, prev}
  version: null, pending: 0, chain: Promise.resolve(), drag: null, seq: 0,
};

// ------------------------------------------------------------------ small helpers
const $ = (sel) => document.querySelector(sel);
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "style") e.style.cssText = v;  // CSSOM: allowed by the page's CSP, unlike style="""
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k);
  return e;
}
const imgUrl = (what, params) => `/img/${what}?` + new URLSearchParams(params);
const fmt = (x, d = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
const pct = (v, of) => `${(100 * v / of).toFixed(3)}%`;
let toastTimer = null;
function toast(msg) {
  const t = $("#toast");
  t.textContent = msg; t.hidden = false;
  clearTimeout(toastTimer); toastTimer = setTimeout(() => { t.hidden = true; }, 6000);
}

// ------------------------------------------------------------------ location <-> state
function readHash() {
  const q = new URLSearchParams(location.hash.slice(1));
  S.view = VIEWS[q.get("view")] ? q.get("view") : "detections";
  const st = q.get("status");
  S.status = VIEWS[S.view].statuses.includes(st) ? st : "all";
  S.min = q.get("min") || ""; S.max = q.get("max") || ""; S.q = q.get("q") || "";
  S.start = Math.max(0, parseInt(q.get("start") || "0", 10) || 0);
}
function writeHash() {
  const q = new URLSearchParams({ view: S.view, status: S.status, start: S.start });
  if (S.min !== "") q.set("min", S.min);
  if (S.max !== "") q.set("max", S.max);
  if (S.q !== "") q.set("q", S.q);
  history.replaceState(null, "", "#" + q);
}

// ------------------------------------------------------------------ loading
async function load(keepKey, inPlace) {
  const v = VIEWS[S.view];
  const q = new URLSearchParams({ status: S.status, start: S.start, per_page: PER_PAGE });
  if (v.conf && S.min !== "") q.set("min_conf", S.min);
  if (v.conf && S.max !== "") q.set("max_conf", S.max);
  if (S.view !== "pairs" && S.q !== "") q.set("q", S.q);
  const seq = ++S.seq;  // only the latest request may change the page
  let r;
  try { r = await fetch(v.api + "?" + q); } catch (e) { toast("server unreachable: is `spidergan review` running?"); return; }
  if (!r.ok) { toast(`listing failed: ${(await r.json().catch(() => ({}))).error || r.status}`); return; }
  const fresh = await r.json();
  if (seq !== S.seq) return;
  if (inPlace && inPlace(fresh)) return;
  S.list = fresh;
  S.version = S.list.version;
  buildCursor();
  const at = keepKey ? S.cursor.findIndex((e) => e.key === keepKey) : -1;
  S.cur = at >= 0 ? at : Math.min(S.cur, Math.max(0, S.cursor.length - 1));
  writeHash();
  render();
}

// Another tab (or process) changed the log: take the new states in place when the window
// still holds the same items, so the grid keeps its scroll position and images.
async function refresh() {
  const old = S.list, e = entry();
  await load(e && e.key, (fresh) => {
    // a decision made meanwhile is newer than this answer: drop it, the next poll retries
    if (S.pending || S.drag) return true;
    const same = old && fresh.items.length === old.items.length &&
      fresh.items.every((it, i) => (it.key || it.id) === (old.items[i].key || old.items[i].id));
    if (!same) return false;
    const changed = [];
    fresh.items.forEach((it, i) => {
      if (JSON.stringify(it) !== JSON.stringify(old.items[i])) changed.push(i);
    });
    S.list = fresh; S.version = fresh.version;
    changed.forEach((i) => refreshItem(i));
    renderHeader();
    return true;
  });
}

function buildCursor() {
  S.cursor = [];
  S.list.items.forEach((it, i) => {
    if (S.view === "detections") it.boxes.forEach((b, j) => S.cursor.push({ i, b: j, key: b.key }));
    else S.cursor.push({ i, key: it.key });
  });
}
const entry = () => S.cursor[S.cur];
function target(e) {
  const it = S.list.items[e.i];
  return S.view === "detections" ? it.boxes[e.b] : it;
}

// ------------------------------------------------------------------ rendering
function renderHeader() {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === S.view));
  const v = VIEWS[S.view], L = S.list, c = L.counts;
  const unit = S.view === "detections" ? "boxes" : v.unit;
  $("#counts").replaceChildren(
    h("span", { class: "chip", id: "count-total" }, h("b", {}, String(c.total)), ` ${unit}`),
    ...v.decisions.map((d) => h("span", { class: `chip ${d}`, id: `count-${d}` }, h("b", {}, String(c[d])), ` ${WORD[d]}`)),
    h("span", { class: "chip undecided", id: "count-undecided" }, h("b", {}, String(c.undecided)), " undecided"));
  const sel = $("#f-status");
  sel.replaceChildren(...v.statuses.map((s) => h("option", { value: s, selected: s === S.status }, WORD[s])));
  $("#conf-filter").hidden = !v.conf;
  $("#f-min").value = S.min; $("#f-max").value = S.max; $("#f-q").value = S.q;
  $("#f-q").parentElement.hidden = S.view === "pairs";
  const n = L.items.length;
  $("#page-info").textContent = n ? `${L.offset + 1}–${L.offset + n} of ${L.matching} ${v.unit}` : `0 of ${L.matching}`;
  $("#prev-page").disabled = L.prev_start === null;
  $("#next-page").disabled = L.next_start === null;
  $("#help").replaceChildren(...HELP[S.view].map(([k, what]) => h("span", {}, ...k.split(" ").map((x) => h("kbd", {}, x)), " " + what)));
}

function render() {
  renderHeader();
  const main = $("#main");
  main.className = "view-" + S.view;
  main.replaceChildren();
  const L = S.list;
  if (!L.items.length) {
    main.append(h("div", { class: "empty" }, L.message || (L.counts.total ? "nothing matches these filters" : "nothing to review")));
    return;
  }
  const grid = h("section", { class: "grid", id: "grid" });
  L.items.forEach((it, i) => grid.append(card(it, i)));
  main.append(grid);
  if (S.view === "detections") main.append(h("section", { id: "detail" }));
  select(S.cur, true);
}

function card(it, i) {
  const onclick = () => { const at = S.cursor.findIndex((e) => e.i === i); if (at >= 0) select(at, true); };
  if (S.view === "detections") {
    const th = h("div", { class: "thumb", style: `aspect-ratio:${it.w}/${it.h}` },
      h("img", { loading: "lazy", src: imgUrl("raw", { id: it.id, s: 256 }), alt: it.id, draggable: "false" }));
    const c = h("div", { class: `card${it.no_spider ? " st-reject" : ""}`, "data-i": i, onclick }, th,
      h("div", { class: "cap" }, h("span", { class: "id", title: it.id }, it.name || it.id),
        h("span", {}, it.no_spider ? "no spider" : `${it.boxes.length} box${it.boxes.length > 1 ? "es" : ""}`)));
    drawBoxes(th, it, false);
    return c;
  }
  if (S.view === "crops") {
    return h("div", { class: `card st-${it.decision || "undecided"}`, "data-i": i, "data-key": it.key, onclick },
      h("div", { class: "thumb" }, h("img", { loading: "lazy", src: imgUrl("crop", { id: it.id, s: 256 }), alt: it.id })),
      h("span", { class: "badge" }, MARK[it.decision] || ""),
      h("div", { class: "cap" }, h("span", { class: "id", title: it.id }, it.name || it.id), h("span", {}, fmt(it.conf))));
  }
  const fig = (side, caption) => h("figure", { class: "fig" },
    h("div", { class: "thumb" }, h("img", { loading: "lazy", src: imgUrl("pair", { n: it.n, side, s: 256 }), alt: side })),
    h("figcaption", { title: it[side] }, caption));
  return h("div", { class: `card pair st-${it.decision || "undecided"}`, "data-i": i, "data-key": it.key, onclick },
    fig("fake", "generated"), fig("real", "nearest training image"),
    h("div", { class: "meta" }, "distance", h("b", {}, fmt(it.distance, 3)),
      h("span", { class: `chip ${it.decision || "undecided"}` }, it.decision || "undecided")));
}

function boxEl(it, b, opts) {
  const [x0, y0, x1, y1] = b.box;
  const st = b.decision || "undecided";
  const cls = ["bx", `st-${st}`];
  if (b.decision === "reject") cls.push("reject-line");
  if (!b.match) cls.push("dim");
  if (opts.sel) cls.push("sel");
  if (opts.label && y0 / it.h < 0.06) cls.push("lbl-in");
  const e = h("div", { class: cls.join(" "), "data-key": b.key,
    style: `left:${pct(x0, it.w)};top:${pct(y0, it.h)};width:${pct(x1 - x0, it.w)};height:${pct(y1 - y0, it.h)}` });
  if (opts.label) e.append(h("span", { class: "lbl" }, `#${b.i} ${fmt(b.conf)}${b.decision ? " " + MARK[b.decision] : ""}`));
  if (opts.handles) for (const c of ["nw", "ne", "sw", "se"]) e.append(h("span", { class: `h ${c}`, "data-corner": c }));
  return e;
}

function drawBoxes(container, it, detail) {
  container.querySelectorAll(".bx").forEach((e) => e.remove());
  const e = entry();
  it.boxes.forEach((b, j) => {
    const sel = detail && e && S.list.items[e.i] === it && e.b === j;
    if (detail && String(b.box) !== String(b.orig_box)) {  // where detect put it, before the drag
      const ghost = boxEl(it, { ...b, box: b.orig_box, match: true }, {});
      ghost.className = "bx ghost";
      container.append(ghost);
    }
    const el = boxEl(it, b, { sel, label: detail, handles: sel });
    if (detail) el.addEventListener("mousedown", (ev) => onBoxDown(ev, it, j));
    container.append(el);
  });
}

function renderDetail() {
  const d = $("#detail"), e = entry();
  if (!d || !e) return;
  const it = S.list.items[e.i], b = it.boxes[e.b];
  if (d.dataset.id !== it.id) {
    d.dataset.id = it.id;
    const stage = h("div", { class: "stage", id: "stage" },
      h("img", { src: imgUrl("raw", { id: it.id, s: 1024 }), alt: it.id, draggable: "false" }));
    d.replaceChildren(
      h("div", { class: "dtitle", id: "dtitle" }),
      h("div", { class: "stagebox", id: "stagebox" }, stage),
      h("div", { class: "actions" },
        h("button", { class: "acc", onclick: () => decide("accept") }, "accept (a)"),
        h("button", { class: "rej", onclick: () => decide("reject") }, "reject (r)"),
        h("button", { class: "rej", onclick: () => noSpider() }, "no spider in this image (x)"),
        h("button", { onclick: () => undo() }, "undo (u)"),
        h("span", { class: "state", id: "dstate" })));
    fitStage();
  }
  const name = it.page ? h("a", { href: it.page, target: "_blank", rel: "noopener" }, it.name || it.id)
    : h("span", {}, it.name || it.id);
  $("#dtitle").replaceChildren(h("b", {}, name), h("span", { class: "id" }, it.id), h("span", {}, `${it.w}×${it.h}`),
    it.no_spider ? h("span", { class: "chip reject" }, "no spider") : null,
    h("span", {}, `box ${e.b + 1} of ${it.boxes.length}`), h("span", {}, `conf ${fmt(b.conf)}`));
  $("#dstate").replaceChildren(h("span", { class: `chip ${b.decision || "undecided"}` }, WORD[b.decision || "undecided"]),
    String(b.box) !== String(b.orig_box) ? `  adjusted: [${b.box.map((v) => Math.round(v)).join(", ")}]` : "");
  drawBoxes($("#stage"), it, true);
}

function fitStage() {
  const box = $("#stagebox"), stage = $("#stage"), e = entry();
  if (!box || !stage || !e) return;
  const it = S.list.items[e.i];
  const pad = 22;  // room for the label above a box at the top edge
  const k = Math.min((box.clientWidth - 4) / it.w, (box.clientHeight - pad) / it.h);
  stage.style.width = `${Math.max(50, it.w * k)}px`;
  stage.style.height = `${Math.max(50, it.h * k)}px`;
}

function select(at, scroll) {
  if (!S.cursor.length) return;
  S.cur = Math.max(0, Math.min(at, S.cursor.length - 1));
  const e = entry();
  document.querySelectorAll(".card.sel").forEach((c) => c.classList.remove("sel"));
  const c = document.querySelector(`.card[data-i="${e.i}"]`);
  if (c) { c.classList.add("sel"); if (scroll) c.scrollIntoView({ block: "nearest" }); }
  if (S.view === "detections") renderDetail();
}

function refreshItem(i) {
  const old = document.querySelector(`.card[data-i="${i}"]`);
  if (!old) return;
  const it = S.list.items[i];
  if (S.view === "detections") {
    drawBoxes(old.querySelector(".thumb"), it, false);
    renderDetail();
  } else {
    const fresh = card(it, i);
    if (old.classList.contains("sel")) fresh.classList.add("sel");
    old.replaceWith(fresh);
  }
  renderHeader();
}

// ------------------------------------------------------------------ deciding
function setLocal(e, decision, box) {
  const t = target(e), c = S.list.counts;
  c[t.decision || "undecided"]--;
  t.decision = decision;
  c[t.decision || "undecided"]++;
  if (S.view === "detections") t.box = box || t.orig_box;
  refreshItem(e.i);
}

function send(body, onFail) {
  S.pending++;
  S.chain = S.chain.then(async () => {
    try {
      const r = await fetch("/api/decide", { method: "POST",
        headers: { "Content-Type": "application/json", "X-Review-Token": TOKEN }, body: JSON.stringify(body) });
      if (!r.ok) {
        const err = (await r.json().catch(() => ({}))).error || `HTTP ${r.status}`;
        toast(r.status === 403 ? "the server refused this page's session token: the server restarted? reload the page" : `not saved: ${err}`);
        onFail();
        return;
      }
      const j = await r.json();
      // someone else wrote since our last look: forget the version so the next poll refreshes
      S.version = j.before === S.version ? j.version : null;
    } catch (err) {
      toast("not saved: server unreachable"); onFail();
    } finally { S.pending--; }
  });
}

function decide(decision, box) {
  const e = entry();
  if (!e) return;
  const t = target(e), kind = VIEWS[S.view].kind;
  const prev = t.decision ? { decision: t.decision, box: t.box } : null;
  const before = { decision: t.decision, box: t.box };
  const body = { kind, key: e.key, decision };
  if (kind === "detection") body.box = box || t.box;
  S.undo.push({ view: S.view, kind, key: e.key, prev });
  setLocal(e, decision, body.box);
  send(body, () => { S.undo.pop(); setLocal(e, before.decision, before.box); });
  if (!box) move(1);
}

// "No spider anywhere in this image": one decision for the whole photo (the detector learns it
// as a background image, the crop stage skips it). Pressing x again clears it.
function noSpider() {
  const e = entry();
  if (!e || S.view !== "detections") return;
  const it = S.list.items[e.i], was = !!it.no_spider;
  const body = { kind: "image", key: it.id, decision: was ? "clear" : "no_spider" };
  S.undo.push({ view: S.view, kind: "image", key: it.id, prev: was ? { decision: "no_spider" } : null });
  const set = (v) => { it.no_spider = v; const fresh = card(it, e.i), old = document.querySelector(`.card[data-i="${e.i}"]`);
    if (old) { fresh.classList.toggle("sel", old.classList.contains("sel")); old.replaceWith(fresh); } renderDetail(); };
  set(!was);
  send(body, () => { S.undo.pop(); set(was); });
  if (!was) moveItem(1);
}

function undo() {
  const u = S.undo.pop();
  if (!u) { toast("nothing to undo in this tab"); return; }
  const body = { kind: u.kind, key: u.key, undo: true, decision: u.prev ? u.prev.decision : "clear" };
  if (u.prev && u.kind === "detection") body.box = u.prev.box;
  if (u.kind === "image") {  // the whole-image "no spider" mark
    const i = u.view === S.view ? S.list.items.findIndex((it) => it.id === u.key) : -1;
    if (i >= 0) { S.list.items[i].no_spider = !!u.prev; S.cur = Math.max(0, S.cursor.findIndex((c) => c.i === i)); render(); }
    send(body, () => S.undo.push(u));
    toast(`undone: ${u.key} ${u.prev ? "no spider" : "cleared"}`);
    return;
  }
  const at = u.view === S.view ? S.cursor.findIndex((e) => e.key === u.key) : -1;
  if (at >= 0) {
    const e = S.cursor[at], t = target(e), before = { decision: t.decision, box: t.box };
    select(at, true);
    setLocal(e, u.prev ? u.prev.decision : null, u.prev ? u.prev.box : null);
    send(body, () => { S.undo.push(u); setLocal(e, before.decision, before.box); });
  } else {
    send(body, () => S.undo.push(u));
    toast(`undone: ${u.key}`);
  }
}

// ------------------------------------------------------------------ dragging box corners
function onBoxDown(ev, it, j) {
  const e = entry();
  const corner = ev.target.dataset.corner;
  if (!corner || !(S.list.items[e.i] === it && e.b === j)) {  // a click on another box selects it
    const at = S.cursor.findIndex((c) => S.list.items[c.i] === it && c.b === j);
    if (at >= 0) select(at, true);
    ev.preventDefault();
    return;
  }
  ev.preventDefault();
  S.drag = { it, j, corner, box: it.boxes[j].box.slice(), el: ev.target.parentElement,
    rect: $("#stage").getBoundingClientRect(), moved: false };
}
window.addEventListener("mousemove", (ev) => {
  const D = S.drag;
  if (!D) return;
  const { it } = D, r = D.rect;
  const x = Math.round(Math.min(Math.max((ev.clientX - r.left) / r.width * it.w, 0), it.w));
  const y = Math.round(Math.min(Math.max((ev.clientY - r.top) / r.height * it.h, 0), it.h));
  const b = D.box, minSide = 2;
  if (D.corner.includes("w")) b[0] = Math.min(x, b[2] - minSide); else b[2] = Math.max(x, b[0] + minSide);
  if (D.corner.includes("n")) b[1] = Math.min(y, b[3] - minSide); else b[3] = Math.max(y, b[1] + minSide);
  D.moved = true;
  Object.assign(D.el.style, { left: pct(b[0], it.w), top: pct(b[1], it.h), width: pct(b[2] - b[0], it.w), height: pct(b[3] - b[1], it.h) });
});
window.addEventListener("mouseup", () => {
  const D = S.drag;
  S.drag = null;
  if (!D || !D.moved) return;
  const t = D.it.boxes[D.j];
  decide(t.decision === "reject" ? "accept" : (t.decision || "accept"), D.box);
});
window.addEventListener("resize", fitStage);

// ------------------------------------------------------------------ moving
function move(step) {
  if (!S.cursor.length) return;
  const to = S.cur + step;
  if (to >= S.cursor.length) { if (S.list.next_start !== null) page(+1); else select(S.cursor.length - 1, true); return; }
  if (to < 0) { if (S.list.prev_start !== null) page(-1, true); return; }
  select(to, true);
}
function moveItem(step) {  // detections: next/previous image; crops: next/previous row
  if (!S.cursor.length) return;
  const e = entry();
  if (S.view === "detections") {
    let at = S.cur;
    while (at >= 0 && at < S.cursor.length && S.cursor[at].i === e.i) at += step;
    if (at < 0 || at >= S.cursor.length) return move(step);
    if (step < 0) while (at > 0 && S.cursor[at - 1].i === S.cursor[at].i) at--;
    return select(at, true);
  }
  if (S.view === "crops") {
    const cards = [...document.querySelectorAll(".card")];
    const top = cards[0].offsetTop, cols = Math.max(1, cards.filter((c) => c.offsetTop === top).length);
    return select(Math.max(0, Math.min(S.cur + step * cols, S.cursor.length - 1)), true);
  }
  return move(step);
}
async function page(dir, toEnd) {
  const L = S.list;
  const start = dir > 0 ? L.next_start : L.prev_start;
  if (start === null || start === undefined) return;
  S.start = start; S.cur = 0;
  await load();
  if (toEnd) select(S.cursor.length - 1, true);
}
async function switchView(v) {
  if (v === S.view) return;
  S.view = v; S.status = "all"; S.min = ""; S.max = ""; S.q = ""; S.start = 0; S.cur = 0;
  await load();
}

document.addEventListener("keydown", (ev) => {
  if (S.drag || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.target.matches("input, select")) { if (ev.key === "Escape" || ev.key === "Enter") ev.target.blur(); return; }
  const pairs = S.view === "pairs";
  const keys = {
    j: () => move(1), ArrowRight: () => move(1), k: () => move(-1), ArrowLeft: () => move(-1),
    ArrowDown: () => moveItem(1), ArrowUp: () => moveItem(-1),
    a: () => decide(pairs ? "ok" : "accept"), r: () => decide(pairs ? "copy" : "reject"),
    u: () => undo(), n: () => page(1), PageDown: () => page(1), p: () => page(-1), PageUp: () => page(-1),
    x: () => noSpider(), "/": () => { if (!pairs) $("#f-q").focus(); },
    1: () => switchView("detections"), 2: () => switchView("crops"), 3: () => switchView("pairs"),
  };
  if (pairs) { keys.c = () => decide("copy"); keys.o = () => decide("ok"); }
  const f = keys[ev.key];
  if (f) { ev.preventDefault(); f(); }
});

// ------------------------------------------------------------------ controls, polling, start
function onFilter() {
  S.status = $("#f-status").value; S.min = $("#f-min").value; S.max = $("#f-max").value; S.q = $("#f-q").value;
  S.start = 0; S.cur = 0;
  load();
}
$("#f-status").addEventListener("change", onFilter);
$("#f-min").addEventListener("change", onFilter);
$("#f-max").addEventListener("change", onFilter);
$("#f-q").addEventListener("change", onFilter);
$("#prev-page").addEventListener("click", () => page(-1));
$("#next-page").addEventListener("click", () => page(1));
document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => switchView(t.dataset.view)));

setInterval(async () => {
  if (document.hidden || S.drag || S.pending || !S.list) return;
  try {
    const v = (await (await fetch("/api/version")).json()).version;
    if (v !== S.version && !S.pending && !S.drag) await refresh();
  } catch (err) { /* server gone: the next decision will say so */ }
}, POLL_MS);

window.addEventListener("hashchange", () => {
  const before = [S.view, S.status, S.min, S.max, S.q, S.start].join("|");
  readHash();
  if ([S.view, S.status, S.min, S.max, S.q, S.start].join("|") !== before) { S.cur = 0; load(); }
});

readHash();
load();
