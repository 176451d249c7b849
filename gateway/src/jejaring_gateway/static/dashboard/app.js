// Jejaring ops dashboard: plain JS, no build step. Talks only to the gateway's API with
// the ops key kept in sessionStorage. Shows "no data yet" / "n/a" instead of numbers it
// does not have.
"use strict";

const I18N = {
  id: {
    title: "Jejaring · Ops", nav_overview: "Ringkasan", nav_events: "Peristiwa",
    sign_in: "Masuk", sign_out: "Keluar",
    sign_in_help: "Tempel kunci API ops Anda. Kunci hanya disimpan di tab ini.",
    bad_key: "Kunci ditolak oleh gateway.", key_forbidden: "Kunci ini bukan kunci ops.",
    requests_by_status: "Permintaan restok per status (200 terbaru)",
    events_per_minute: "Peristiwa per menit (langsung)",
    heat_title: "Hari persediaan: gerai × barang pareto A",
    outlet: "Gerai", stock_levels: "Tingkat stok", restock_requests: "Permintaan restok",
    live_events: "Peristiwa langsung", filter_type: "Jenis", filter_outlet: "Gerai",
    filter_correlation: "ID korelasi", apply: "Terapkan", stream: "Aliran",
    shown: "ditampilkan", no_events: "Belum ada peristiwa.", no_data: "belum ada data",
    na: "n/a", fill_rate: "Tingkat pemenuhan", ttf_p50: "Waktu penuhi p50",
    ttf_p90: "Waktu penuhi p90", peer_share: "Porsi dari gerai lain",
    open_requests: "Permintaan terbuka", requests_total: "Total permintaan",
    live: "langsung", connecting: "menghubungkan…", disconnected: "terputus, mencoba lagi",
    sku: "SKU", on_hand: "Di tangan", reserved: "Dipesan", available: "Tersedia",
    cover: "Hari persediaan", status: "Status", quantity: "Jumlah", created: "Dibuat",
    received: "Diterima", region: "Wilayah", unavailable: "layanan tidak tersedia",
    signin_unavailable: "Gateway tidak dapat memeriksa kunci sekarang; coba lagi.",
    dropped: "peristiwa terlewat",
  },
  en: {
    title: "Jejaring · Ops", nav_overview: "Overview", nav_events: "Events",
    sign_in: "Sign in", sign_out: "Sign out",
    sign_in_help: "Paste your ops API key. It is kept in this tab only.",
    bad_key: "The gateway refused this key.", key_forbidden: "This key is not an ops key.",
    requests_by_status: "Restock requests by status (latest 200)",
    events_per_minute: "Events per minute (live)",
    heat_title: "Days of cover: outlets × pareto A items",
    outlet: "Outlet", stock_levels: "Stock levels", restock_requests: "Restock requests",
    live_events: "Live events", filter_type: "Type", filter_outlet: "Outlet",
    filter_correlation: "Correlation id", apply: "Apply", stream: "Stream",
    shown: "shown", no_events: "No events yet.", no_data: "no data yet",
    na: "n/a", fill_rate: "Fill rate", ttf_p50: "Time to fill p50",
    ttf_p90: "Time to fill p90", peer_share: "Share filled by peers",
    open_requests: "Open requests", requests_total: "Requests",
    live: "live", connecting: "connecting…", disconnected: "disconnected, retrying",
    sku: "SKU", on_hand: "On hand", reserved: "Reserved", available: "Available",
    cover: "Days of cover", status: "Status", quantity: "Quantity", created: "Created",
    received: "Received", region: "Region", unavailable: "service unavailable",
    signin_unavailable: "The gateway cannot check the key right now; try again.",
    dropped: "events missed",
  },
};
const OPEN_STATES = ["open", "matching"];
const MAX_EVENTS = 300;
const STALL_MS = 45000; // the gateway pings every 15 s: silence this long is a dead link
const RATE_MINUTES = 30;

const state = {
  lang: sessionStorage.getItem("jejaring.lang") || "id",
  key: sessionStorage.getItem("jejaring.key") || "",
  stream: null, // AbortController of the live stream
  events: [],
  perMinute: new Map(), // minute of occurred_at (ms) -> count, the last RATE_MINUTES only
  counted: new Set(), // ids already in perMinute: a replay after a filter change is not new
  dropped: 0, // events the gateway dropped for this page (it was too slow to read them)
  loads: 0, // page loads started: an older load's late answers are not shown
  renderQueued: false,
};

const $ = (sel) => document.querySelector(sel);
const t = (k) => (I18N[state.lang] && I18N[state.lang][k]) || I18N.en[k] || k;
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => (
  { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

function applyLang() {
  document.documentElement.lang = state.lang;
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("#lang").textContent = state.lang === "id" ? "EN" : "ID";
}

const KEY_REFUSED = ["invalid_api_key", "api_key_required"];

async function api(path, { probing = false } = {}) {
  // Never throws: {ok, status, body}. Errors are shown as "n/a", not logged as failures.
  // A read hung on a dead link gives up after 20 s (the overview's refresh waits for it).
  const key = state.key;
  try {
    const resp = await fetch(path, {
      headers: { authorization: "Bearer " + key }, signal: AbortSignal.timeout(20000),
    });
    let body = null;
    try { body = await resp.json(); } catch (_e) { body = null; }
    // The gateway refusing this very key (revoked) signs out, as the docs promise; not a
    // service's own 401, nor a late answer for a key signed out of since.
    const code = body && body.error ? body.error.code : "";
    if (resp.status === 401 && !probing && key && key === state.key && KEY_REFUSED.includes(code)) {
      signOut();
    }
    return { ok: resp.ok, status: resp.status, body };
  } catch (_e) {
    return { ok: false, status: 0, body: null };
  }
}

// ---------------------------------------------------------------- sign in / routing
async function signIn(key) {
  state.key = key;
  // The gateway says whose key it is (no service needs to be up: signing in to watch an
  // outage must work). Only ops and admin keys: an outlet's would show its own outlet's
  // figures as the network's. The gateway down (0), limiting (429) or failing (5xx) has
  // not checked the key at all: no sign-in then either.
  const probe = await api("/api/v1/me", { probing: true });
  const role = probe.ok && probe.body ? probe.body.role : null;
  if (role !== "ops" && role !== "admin") {
    state.key = "";
    $("#signin-error").textContent = probe.status === 401 ? t("bad_key")
      : probe.ok ? t("key_forbidden") : t("signin_unavailable");
    return false;
  }
  sessionStorage.setItem("jejaring.key", key);
  return true;
}

function signOut() {
  sessionStorage.removeItem("jejaring.key");
  state.key = "";
  stopStream();
  route();
}

function show(id) {
  for (const s of ["signin", "overview", "outlet"]) $("#" + s).hidden = s !== id;
  $("#events").hidden = id === "signin"; // the live stream is on every signed-in page
}

function route() {
  const signedIn = Boolean(state.key);
  $("#nav").hidden = !signedIn;
  $("#signout").hidden = !signedIn;
  if (!signedIn) { show("signin"); return; }
  const hash = location.hash || "#overview";
  if (hash.startsWith("#outlet/")) {
    show("outlet");
    const id = decodeURIComponent(hash.slice(8));
    followOutlet(id); // now, not after the page's reads (which may fail, or finish late)
    loadOutlet(id);
  } else if (hash === "#events") {
    show("events");
  } else {
    show("overview");
    loadOverview();
  }
  if (!hash.startsWith("#outlet/")) followOutlet("");
  if (!state.stream) startStream();
}

// ---------------------------------------------------------------- overview
function tile(label, value) {
  const na = value === null || value === undefined;
  return `<div class="tile"><div class="label">${esc(label)}</div>` +
    `<div class="value${na ? " na" : ""}">${na ? esc(t("na")) : esc(value)}</div></div>`;
}

const pct = (x) => (x === null || x === undefined ? null : (x * 100).toFixed(1) + "%");
function dur(s) {
  if (s === null || s === undefined) return null;
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function kpiTiles(k) {
  if (!k) {
    return [t("fill_rate"), t("ttf_p50"), t("ttf_p90"), t("peer_share"), t("open_requests")]
      .map((l) => tile(l, null)).join("");
  }
  const open = k.open_by_age ? Object.values(k.open_by_age).reduce((a, b) => a + b, 0) : null;
  return [
    tile(t("fill_rate"), pct(k.fill_rate)),
    tile(t("ttf_p50"), dur(k.time_to_fill_s && k.time_to_fill_s.p50)),
    tile(t("ttf_p90"), dur(k.time_to_fill_s && k.time_to_fill_s.p90)),
    tile(t("peer_share"), pct(k.share && k.share.peers)),
    tile(t("open_requests"), open),
    tile(t("requests_total"), k.requests ?? null),
  ].join("");
}

function barChart(pairs) {
  if (!pairs.length) return `<p class="muted">${esc(t("no_data"))}</p>`;
  const max = Math.max(...pairs.map((p) => p[1]), 1);
  const rowH = 26, w = 320, labelW = 130;
  const bars = pairs.map(([label, n], i) => {
    const bw = Math.max(2, ((w - labelW - 40) * n) / max);
    const y = i * rowH;
    return `<text x="0" y="${y + 17}" font-size="12">${esc(label)}</text>` +
      `<rect x="${labelW}" y="${y + 5}" width="${bw}" height="16" rx="3" fill="#0f7b4f"></rect>` +
      `<text x="${labelW + bw + 4}" y="${y + 17}" font-size="12">${n}</text>`;
  }).join("");
  return `<svg viewBox="0 0 ${w} ${pairs.length * rowH}" role="img">${bars}</svg>`;
}

function rateChart() {
  const now = Math.floor(Date.now() / 60000) * 60000;
  const points = [];
  for (let i = 29; i >= 0; i--) points.push(state.perMinute.get(now - i * 60000) || 0);
  if (!points.some((x) => x > 0)) return `<p class="muted">${esc(t("no_data"))}</p>`;
  const max = Math.max(...points, 1), w = 300, h = 80;
  const step = w / (points.length - 1);
  const d = points.map((v, i) => `${i ? "L" : "M"}${(i * step).toFixed(1)},${(h - (v / max) * (h - 6)).toFixed(1)}`).join(" ");
  return `<svg viewBox="0 0 ${w} ${h + 14}" role="img"><path d="${d}" fill="none" stroke="#0f7b4f" stroke-width="2"></path>` +
    `<text x="0" y="${h + 12}" font-size="10">-30 min</text><text x="${w - 40}" y="${h + 12}" font-size="10">max ${max}</text></svg>`;
}

function coverColor(days) {
  if (days === null || days === undefined) return "#9aa5a0";
  if (days < 2) return "#c62828";
  if (days < 5) return "#ef8f00";
  if (days < 14) return "#2e7d32";
  return "#1565c0";
}

async function loadOverview() {
  const load = ++state.loads;
  const [kpis, reqs, outlets, pareto] = await Promise.all([
    api("/api/v1/kpis"), api("/api/v1/restock-requests?limit=200"),
    api("/api/v1/outlets"), api("/api/v1/pareto"),
  ]);
  if (load !== state.loads) return; // another page (or a newer load) took over meanwhile
  $("#kpis").innerHTML = kpiTiles(kpis.ok ? kpis.body : null);
  if (reqs.ok && reqs.body && Array.isArray(reqs.body.requests)) {
    const counts = {};
    for (const r of reqs.body.requests) counts[r.status] = (counts[r.status] || 0) + 1;
    $("#status-chart").innerHTML = barChart(Object.entries(counts).sort((a, b) => b[1] - a[1]));
  } else {
    $("#status-chart").innerHTML = `<p class="muted">${esc(t("na"))}</p>`;
  }
  $("#rate-chart").innerHTML = rateChart();
  await loadHeat(outlets, pareto, load);
}

async function loadHeat(outlets, pareto, load) {
  const el = $("#heat");
  if (!outlets.ok || !pareto.ok) { el.innerHTML = `<p class="muted">${esc(t("na"))}</p>`; return; }
  const list = (outlets.body.outlets || []).slice(0, 20);
  const skus = (pareto.body.skus || []).filter((s) => s.class === "A").slice(0, 12).map((s) => s.sku);
  if (!list.length || !skus.length) { el.innerHTML = `<p class="muted">${esc(t("no_data"))}</p>`; return; }
  const stocks = await Promise.all(list.map((o) => api(`/api/v1/outlets/${encodeURIComponent(o.id)}/stock`)));
  if (load !== state.loads) return;
  const head = `<tr><th>${esc(t("outlet"))}</th>${skus.map((s) => `<th>${esc(s)}</th>`).join("")}</tr>`;
  const rows = list.map((o, i) => {
    const levels = new Map(((stocks[i].ok && stocks[i].body.levels) || []).map((l) => [l.sku, l]));
    const cells = skus.map((s) => {
      const l = levels.get(s);
      const days = l ? l.days_of_cover : null;
      const text = l ? (days === null ? "–" : Number(days).toFixed(1)) : "";
      return `<td class="cell" style="background:${coverColor(l ? days : null)}" title="${esc(s)}">${esc(text)}</td>`;
    }).join("");
    return `<tr><td><a href="#outlet/${encodeURIComponent(o.id)}">${esc(o.name || o.id)}</a>` +
      `${o.status === "at_risk" ? " ⚠" : ""}</td>${cells}</tr>`;
  }).join("");
  el.innerHTML = `<table class="heat">${head}${rows}</table>`;
}

// ---------------------------------------------------------------- outlet page
function table(cols, rows) {
  if (!rows.length) return `<p class="muted">${esc(t("no_data"))}</p>`;
  return `<table><tr>${cols.map((c) => `<th class="${c[2] || ""}">${esc(t(c[0]))}</th>`).join("")}</tr>` +
    rows.map((r) => `<tr>${cols.map((c) => `<td class="${c[2] || ""}">${esc(c[1](r) ?? "")}</td>`).join("")}</tr>`).join("") +
    "</table>";
}

async function loadOutlet(id) {
  const load = ++state.loads;
  $("#outlet-name").textContent = id;
  const q = encodeURIComponent(id);
  const [outlet, stock, reqs, kpis] = await Promise.all([
    api(`/api/v1/outlets/${q}`), api(`/api/v1/outlets/${q}/stock`),
    api(`/api/v1/restock-requests?outlet_id=${q}&limit=50`), api(`/api/v1/kpis?outlet_id=${q}`),
  ]);
  if (load !== state.loads) return; // outlet A's late answers never fill outlet B's page
  if (outlet.ok) $("#outlet-name").textContent = `${outlet.body.name} (${id}) · ${outlet.body.status}`;
  $("#outlet-kpis").innerHTML = kpiTiles(kpis.ok ? kpis.body : null);
  $("#outlet-stock").innerHTML = stock.ok ? table([
    ["sku", (l) => l.sku], ["on_hand", (l) => l.on_hand, "num"], ["reserved", (l) => l.reserved, "num"],
    ["available", (l) => l.available, "num"],
    ["cover", (l) => (l.days_of_cover === null ? "–" : Number(l.days_of_cover).toFixed(1)), "num"],
  ], stock.body.levels || []) : `<p class="muted">${esc(t("na"))}</p>`;
  $("#outlet-requests").innerHTML = reqs.ok ? table([
    ["sku", (r) => r.sku], ["quantity", (r) => r.quantity, "num"], ["received", (r) => r.received, "num"],
    ["status", (r) => r.status], ["created", (r) => (r.created_at || "").replace("T", " ").slice(0, 19)],
  ], reqs.body.requests || []) : `<p class="muted">${esc(t("na"))}</p>`;
}

// An outlet page filters the live stream to that outlet, unless the user typed a filter of
// their own; the filter it set follows to the next outlet page and is cleared on leaving.
let autoOutlet = "";
function followOutlet(id) {
  const f = $("#filter-outlet");
  if (!f || (f.value && f.value !== autoOutlet) || f.value === id) return;
  f.value = autoOutlet = id;
  restartStream();
}

// ---------------------------------------------------------------- live events (SSE over fetch)
function streamUrl() {
  const p = new URLSearchParams({ replay: "50" });
  for (const [id, name] of [["#filter-type", "type"], ["#filter-outlet", "outlet"], ["#filter-correlation", "correlation_id"]]) {
    const v = $(id).value.trim();
    if (v) p.set(name, v);
  }
  return "/api/v1/events/stream?" + p.toString();
}

function setStatus(kind) {
  const el = $("#stream-status");
  el.dataset.state = kind;
  el.textContent = t({ live: "live", connecting: "connecting", error: "disconnected", idle: "connecting" }[kind]) +
    (kind === "live" && state.dropped ? ` (${state.dropped} ${t("dropped")})` : "");
}

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

function restartStream() {
  stopStream();
  state.events = [];
  state.dropped = 0;
  renderEvents();
  startStream();
}

async function startStream() {
  const ctrl = new AbortController();
  state.stream = ctrl;
  let delay = 1000;
  while (!ctrl.signal.aborted && state.key) {
    setStatus("connecting");
    // One attempt: aborted with the stream, or by the watchdog when the link goes silent
    // (a half-open connection never ends a read; the gateway pings every 15 s).
    const attempt = new AbortController();
    const stop = () => attempt.abort();
    ctrl.signal.addEventListener("abort", stop);
    let watchdog = setTimeout(stop, STALL_MS);
    try {
      const resp = await fetch(streamUrl(), {
        headers: { authorization: "Bearer " + state.key, accept: "text/event-stream" },
        signal: attempt.signal,
      });
      if (resp.status === 401) { signOut(); return; }
      if (!resp.ok || !resp.body) throw new Error("status " + resp.status);
      state.dropped = 0; // the gateway counts a connection's drops afresh
      setStatus("live");
      delay = 1000;
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        clearTimeout(watchdog);
        watchdog = setTimeout(stop, STALL_MS);
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          handleMessage(buf.slice(0, cut));
          buf = buf.slice(cut + 2);
        }
      }
    } catch (_e) {
      if (ctrl.signal.aborted) return;
    } finally {
      clearTimeout(watchdog);
      ctrl.signal.removeEventListener("abort", stop);
    }
    if (ctrl.signal.aborted) return;
    setStatus("error");
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

function handleMessage(block) {
  let kind = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return;
  let ev;
  try { ev = JSON.parse(data); } catch (_e) { return; }
  if (kind === "revoked") { signOut(); return; } // the key was revoked while watching
  if (kind === "dropped") { state.dropped = ev.dropped || 0; setStatus("live"); return; }
  if (kind !== "message") return;
  if (state.events.some((e) => e.id === ev.id)) return;
  state.events.unshift(ev);
  if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
  countEvent(ev);
  scheduleRender();
}

function countEvent(ev) {
  // By when it happened, once per event: a replay after a filter change or a reconnect
  // is not a burst of new events.
  if (state.counted.has(ev.id)) return;
  const at = Date.parse(ev.occurred_at || "") || Date.now();
  const minute = Math.floor(at / 60000) * 60000;
  const oldest = Math.floor(Date.now() / 60000) * 60000 - RATE_MINUTES * 60000;
  if (minute < oldest) return;
  state.counted.add(ev.id);
  state.perMinute.set(minute, (state.perMinute.get(minute) || 0) + 1);
  for (const m of state.perMinute.keys()) if (m < oldest) state.perMinute.delete(m);
  if (state.counted.size > 20000) state.counted.clear(); // bounded; a recount is harmless
}

function scheduleRender() {
  // Many events a second would otherwise rebuild the list (and chart) once each.
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    renderEvents();
    if (!$("#overview").hidden) $("#rate-chart").innerHTML = rateChart();
  });
}

function outletOf(ev) {
  const p = ev.payload || {};
  return p.outlet_id || (ev.source === "stock" && ev.key ? String(ev.key).split(":")[0] : "");
}

function renderEvents() {
  const list = $("#events-list");
  list.innerHTML = state.events.map((ev) => {
    const time = (ev.occurred_at || "").slice(11, 19);
    const outlet = outletOf(ev);
    const p = ev.payload || {};
    const what = [p.sku, p.quantity !== undefined ? "×" + p.quantity : "", outlet ? "@" + outlet : ""].filter(Boolean).join(" ");
    return `<li data-type="${esc(ev.type)}" data-id="${esc(ev.id)}"><span class="t">${esc(time)}</span>` +
      `<span><span class="type">${esc(ev.type)}</span> ${esc(what)}</span>` +
      `<span class="meta">${esc(ev.source)} · key ${esc(ev.key)}${ev.correlation_id ? " · corr " + esc(ev.correlation_id) : ""}</span></li>`;
  }).join("");
  $("#event-count").textContent = String(state.events.length);
  $("#events-empty").hidden = state.events.length > 0;
}

// ---------------------------------------------------------------- wiring
$("#signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("#signin-error").textContent = "";
  if (await signIn($("#key-input").value.trim())) { $("#key-input").value = ""; route(); }
});
$("#signout").addEventListener("click", signOut);
$("#lang").addEventListener("click", () => {
  state.lang = state.lang === "id" ? "en" : "id";
  sessionStorage.setItem("jejaring.lang", state.lang);
  applyLang();
  renderEvents();
  if (!$("#overview").hidden) loadOverview();
});
$("#filters").addEventListener("submit", (e) => { e.preventDefault(); restartStream(); });
window.addEventListener("hashchange", route);
// Refreshed 15 s after the last refresh ended (never two at once), and not in a hidden tab.
function poll() {
  const again = () => setTimeout(poll, 15000);
  if (document.hidden || $("#overview").hidden || !state.key) { again(); return; }
  loadOverview().finally(again);
}
setTimeout(poll, 15000);
applyLang();
renderEvents();
route();
