// The Routero spend dashboard: plain browser JavaScript over the public billing API.
//
// Every number comes from the API as it answered: money is the API's decimal string,
// shown and compared exactly (never through a float), and totals are the API's own.
// Floats serve only the chart's geometry. Data is written with textContent, so ids
// from the gateway are shown, never interpreted.
"use strict";

const params = new URLSearchParams(location.search);
// How often the open page refreshes itself (`?refresh=ms`, at least a second).
const REFRESH_MS = Math.max(1000, Number(params.get("refresh")) || 5000);
const PALETTE = ["#3b6fd8", "#e3823b", "#3aa675", "#c34f8e", "#8a63d2", "#c9a227", "#4bb3c4", "#d2524f"];
const OTHER_COLOR = "#9aa3ad";
const SVG = "http://www.w3.org/2000/svg";

const state = {
  token: sessionStorage.getItem("routero-token") || "",
  principal: null,
  workspace: "",
  currency: "",
  teams: new Set(),
  models: new Set(),
  rows: [],
  totals: null,
  sort: { key: "date", descending: true },
  page: 1,
  timer: null,
  cursor: null,
  olderLoaded: false,
};

const $ = (id) => document.getElementById(id);

/// An API refusal or a failed request, with the problem's title and detail.
class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail || "";
  }
}

/// Calls the API with the bearer token; a non-2xx answer throws its problem.
async function api(path, options = {}) {
  const headers = { authorization: `Bearer ${state.token}`, ...(options.headers || {}) };
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (e) {
    throw new ApiError(0, "The server did not answer", e.message);
  }
  if (!response.ok) {
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) {
      const problem = await response.json().catch(() => ({}));
      throw new ApiError(response.status, problem.title || `HTTP ${response.status}`, problem.detail);
    }
    const text = await response.text().catch(() => "");
    throw new ApiError(response.status, `HTTP ${response.status}`, text.trim().slice(0, 200));
  }
  return options.raw ? response : response.json();
}

function showError(error) {
  $("error-title").textContent = error.title || "Something went wrong";
  $("error-detail").textContent = error.detail || (error.title ? "" : String(error.message || error));
  $("error").hidden = false;
  if (error.status === 401) signOut("The token was refused: sign in again.");
}

function clearError() {
  $("error").hidden = true;
}

/// Exact comparison of two decimal strings ("-12.5" < "3" < "3.01").
function compareDecimal(a, b) {
  const negative = (s) => s.startsWith("-");
  if (negative(a) !== negative(b)) return negative(a) ? -1 : 1;
  const sign = negative(a) ? -1 : 1;
  const split = (s) => {
    const [whole, fraction = ""] = s.replace(/^[-+]/, "").split(".");
    return [whole.replace(/^0+(?=\d)/, ""), fraction];
  };
  const [aw, af] = split(a);
  const [bw, bf] = split(b);
  if (aw.length !== bw.length) return sign * (aw.length - bw.length);
  if (aw !== bw) return sign * (aw < bw ? -1 : 1);
  const n = Math.max(af.length, bf.length);
  const [ap, bp] = [af.padEnd(n, "0"), bf.padEnd(n, "0")];
  return ap === bp ? 0 : sign * (ap < bp ? -1 : 1);
}

function money(value) {
  return `${value} ${state.currency || ""}`.trim();
}

function setMoney(id, value) {
  const element = $(id);
  element.dataset.value = value;
  element.textContent = money(value);
}

function count(n) {
  return Number(n).toLocaleString("en-US");
}

function isoDate(date) {
  return date.toISOString().slice(0, 10);
}

function element(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (className) e.className = className;
  return e;
}

function svg(tag, attributes) {
  const e = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) e.setAttribute(name, value);
  return e;
}

// ---------------------------------------------------------------- sign in

async function signIn(token) {
  state.token = token;
  const principal = await api("/billing/principal");
  state.principal = principal;
  sessionStorage.setItem("routero-token", token);
  const select = $("workspace");
  select.replaceChildren();
  for (const w of principal.workspaces || []) select.append(new Option(w, w));
  if (!principal.workspaces || principal.workspaces.length === 0) {
    select.append(new Option("(all of the org's)", ""));
  }
  const wanted = params.get("workspace");
  state.workspace = wanted !== null ? wanted : select.value;
  if (wanted !== null && ![...select.options].some((o) => o.value === wanted)) {
    select.append(new Option(wanted, wanted));
  }
  select.value = state.workspace;
  $("who").textContent = `${principal.org} · ${principal.role}`;
  $("nav").hidden = false;
  $("sign-in").hidden = true;
  route();
}

function signOut(message) {
  clearInterval(state.timer);
  state.token = "";
  state.principal = null;
  sessionStorage.removeItem("routero-token");
  $("nav").hidden = true;
  $("overview").hidden = true;
  $("wallet").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-message").hidden = !message;
  $("sign-in-message").textContent = message || "";
}

// ---------------------------------------------------------------- pages

function route() {
  if (!state.principal) return;
  state.olderLoaded = false;
  const page = location.hash === "#wallet" ? "wallet" : "overview";
  $("overview").hidden = page !== "overview";
  $("wallet").hidden = page !== "wallet";
  $("nav-overview").classList.toggle("active", page === "overview");
  $("nav-wallet").classList.toggle("active", page === "wallet");
  clearInterval(state.timer);
  if (page === "overview") {
    refreshOverview();
    state.timer = setInterval(refreshOverview, REFRESH_MS);
  } else {
    // The invoices are read when the page opens and after a top-up, not on every tick.
    refreshWallet();
    refreshInvoices();
    state.timer = setInterval(refreshWallet, REFRESH_MS);
  }
}

function workspaceQuery(q) {
  if (state.workspace) q.set("workspace", state.workspace);
  return q;
}

function rangeQuery() {
  const q = workspaceQuery(new URLSearchParams({
    start_date: $("start-date").value,
    end_date: $("end-date").value,
  }));
  if ($("team-filter").value) q.set("team_ids", $("team-filter").value);
  if ($("model-filter").value) q.set("model", $("model-filter").value);
  return q;
}

// ---------------------------------------------------------------- overview

let overviewRun = 0;

async function refreshOverview() {
  const run = ++overviewRun;
  try {
    const range = rangeQuery();
    // Wallets are kept by workspace: a principal that lists none (the whole org)
    // gets the org's analytics without the cards.
    const [overview, trend, activity] = await Promise.all([
      state.workspace ? api(`/billing/overview?${workspaceQuery(new URLSearchParams())}`) : null,
      api(`/billing/spend-trend?${range}`),
      dailyActivity(range),
    ]);
    if (run !== overviewRun) return; // A newer refresh has started.
    clearError();
    if (overview) {
      state.currency = overview.currency;
      renderCards(overview);
    }
    renderTrend(trend);
    collectOptions(activity.results);
    state.rows = rowsOf(activity.results);
    state.totals = activity.metadata;
    renderChart(activity.results);
    renderTable();
    $("updated").textContent = new Date().toLocaleTimeString("en-GB");
    $("updated").dataset.count = String(Number($("updated").dataset.count || 0) + 1);
  } catch (e) {
    if (run === overviewRun) showError(e);
  }
}

/// Every page of the team activity over the range.
async function dailyActivity(range) {
  const results = [];
  for (let page = 1; ; page += 1) {
    const q = new URLSearchParams(range);
    q.set("page", String(page));
    q.set("page_size", "1000");
    const body = await api(`/team/daily/activity?${q}`);
    results.push(...body.results);
    if (!body.metadata.has_more) return { results, metadata: body.metadata };
  }
}

function renderCards(o) {
  setMoney("card-balance", o.balance);
  setMoney("card-mtd", o.month_to_date);
  setMoney("card-projected", o.projected_month);
  $("card-days").textContent = `day ${o.days_elapsed} of ${o.days_in_month}`;
  setMoney("card-managed", o.managed_month_to_date);
  setMoney("card-byok", o.byok_month_to_date);
  const bar = $("split-bar");
  bar.replaceChildren();
  const managed = Number(o.managed_month_to_date);
  const byok = Number(o.byok_month_to_date);
  const whole = managed + byok;
  const share = whole > 0 ? (100 * managed) / whole : 0;
  bar.append(svg("rect", { x: 0, y: 0, width: share, height: 6, fill: PALETTE[0] }));
  bar.append(svg("rect", { x: share, y: 0, width: 100 - share, height: 6, fill: whole > 0 ? PALETTE[1] : OTHER_COLOR }));
}

function renderTrend(t) {
  const trend = $("trend");
  trend.dataset.total = t.total;
  trend.dataset.previous = t.previous_total;
  const ratio = t.change_ratio === null || t.change_ratio === undefined
    ? "no spend before"
    : `${compareDecimal(t.change, "0") >= 0 ? "+" : ""}${(Number(t.change_ratio) * 100).toFixed(1)} %`;
  trend.textContent = `${money(t.total)} in range · ${money(t.previous_total)} in the ${t.previous_from} – ${t.previous_to} before · ${ratio}`;
}

function groupOf(result) {
  return $("group-by").value === "model" ? result.breakdown.models : result.breakdown.entities;
}

function rowsOf(results) {
  const rows = [];
  for (const r of results) {
    for (const [key, entry] of Object.entries(groupOf(r))) {
      rows.push({ date: r.date, key: key || "(none)", ...entry.metrics });
    }
  }
  return rows;
}

function collectOptions(results) {
  for (const r of results) {
    Object.keys(r.breakdown.entities).forEach((t) => t && state.teams.add(t));
    Object.keys(r.breakdown.models).forEach((m) => m && state.models.add(m));
  }
  fillSelect($("team-filter"), state.teams, "All teams");
  fillSelect($("model-filter"), state.models, "All models");
}

function fillSelect(select, values, all) {
  const chosen = select.value;
  const sorted = [...values].sort();
  const have = [...select.options].map((o) => o.value);
  if (["", ...sorted].join("\n") === have.join("\n")) return;
  select.replaceChildren(new Option(all, ""), ...sorted.map((v) => new Option(v, v)));
  select.value = chosen;
}

function renderChart(results) {
  const chart = $("chart");
  chart.replaceChildren();
  const legend = $("legend");
  legend.replaceChildren();
  const [width, height, left, bottom, top] = [900, 260, 70, 24, 10];
  const days = [];
  const start = new Date(`${$("start-date").value}T00:00:00Z`);
  const end = new Date(`${$("end-date").value}T00:00:00Z`);
  for (let d = start; d <= end && days.length < 400; d = new Date(d.getTime() + 86400000)) days.push(isoDate(d));
  const byDate = new Map(results.map((r) => [r.date, r]));
  // The biggest groups over the range get a colour each; the rest are "other".
  const sums = new Map();
  for (const r of results) {
    for (const [key, entry] of Object.entries(groupOf(r))) {
      sums.set(key, (sums.get(key) || 0) + Number(entry.metrics.spend));
    }
  }
  const ranked = [...sums.entries()].sort((a, b) => b[1] - a[1]).map(([k]) => k);
  const named = ranked.slice(0, PALETTE.length - (ranked.length > PALETTE.length ? 1 : 0));
  const color = (key) => (named.includes(key) ? PALETTE[named.indexOf(key)] : OTHER_COLOR);
  const max = Math.max(0, ...results.map((r) => Number(r.metrics.spend)));
  const plot = height - bottom - top;
  const step = (width - left) / Math.max(days.length, 1);
  chart.append(svg("line", { x1: left, y1: top + plot, x2: width, y2: top + plot, class: "axis" }));
  const label = svg("text", { x: left - 6, y: top + 10, class: "tick", "text-anchor": "end" });
  label.textContent = max > 0 ? `$${max.toPrecision(3)}` : "$0";
  chart.append(label);
  days.forEach((day, i) => {
    const result = byDate.get(day);
    const group = svg("g", { "data-date": day, "data-spend": result ? result.metrics.spend : "0" });
    const title = svg("title", {});
    title.textContent = `${day}: ${money(result ? result.metrics.spend : "0")}`;
    group.append(title);
    let y = top + plot;
    if (result && max > 0) {
      const entries = Object.entries(groupOf(result)).sort((a, b) => ranked.indexOf(a[0]) - ranked.indexOf(b[0]));
      for (const [key, entry] of entries) {
        const h = (Number(entry.metrics.spend) / max) * plot;
        y -= h;
        const rect = svg("rect", { x: left + i * step + step * 0.15, y, width: step * 0.7, height: h, fill: color(key) });
        const tip = svg("title", {});
        tip.textContent = `${day} · ${key || "(none)"}: ${money(entry.metrics.spend)}`;
        rect.append(tip);
        group.append(rect);
      }
    }
    if (days.length <= 16 || i % Math.ceil(days.length / 16) === 0) {
      const tick = svg("text", { x: left + i * step + step / 2, y: height - 6, class: "tick", "text-anchor": "middle" });
      tick.textContent = day.slice(5);
      group.append(tick);
    }
    chart.append(group);
  });
  for (const key of [...named, ...(ranked.length > named.length ? ["other"] : [])]) {
    const item = element("li", key || "(none)");
    item.prepend(svgSwatch(color(key)));
    legend.append(item);
  }
}

function svgSwatch(fill) {
  const s = svg("svg", { width: 10, height: 10, viewBox: "0 0 10 10" });
  s.append(svg("rect", { width: 10, height: 10, fill }));
  return s;
}

function compareRows(a, b, key) {
  if (key === "spend") return compareDecimal(a.spend, b.spend);
  if (key === "date" || key === "key") return a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0;
  return a[key] - b[key];
}

function renderTable() {
  if (!state.totals) return; // Nothing fetched yet.
  const { key, descending } = state.sort;
  const rows = [...state.rows].sort((a, b) => {
    const c = compareRows(a, b, key) || compareRows(a, b, "date") || compareRows(a, b, "key");
    return descending ? -c : c;
  });
  const size = Number($("page-size").value);
  const pages = Math.max(1, Math.ceil(rows.length / size));
  state.page = Math.min(Math.max(1, state.page), pages);
  const body = $("activity").tBodies[0];
  body.replaceChildren();
  for (const row of rows.slice((state.page - 1) * size, state.page * size)) {
    const tr = element("tr");
    tr.dataset.date = row.date;
    tr.dataset.key = row.key;
    tr.append(element("td", row.date), element("td", row.key));
    for (const n of ["api_requests", "prompt_tokens", "completion_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "total_tokens"]) {
      const td = element("td", count(row[n]), "num");
      td.dataset.value = String(row[n]);
      tr.append(td);
    }
    const cost = element("td", row.spend, "num");
    cost.dataset.value = row.spend;
    tr.append(cost);
    body.append(tr);
  }
  if (rows.length === 0) {
    const tr = element("tr");
    const td = element("td", "No spend in this range.", "empty");
    td.colSpan = 9;
    tr.append(td);
    body.append(tr);
  }
  const t = state.totals;
  $("total-requests").textContent = count(t.total_api_requests);
  $("total-prompt").textContent = count(t.total_prompt_tokens);
  $("total-completion").textContent = count(t.total_completion_tokens);
  $("total-tokens").textContent = count(t.total_tokens);
  $("total-spend").textContent = money(t.total_spend);
  $("total-spend").dataset.value = t.total_spend;
  $("page-info").textContent = `Page ${state.page} of ${pages} · ${rows.length} rows`;
  $("page-info").dataset.rows = String(rows.length);
  $("prev-page").disabled = state.page <= 1;
  $("next-page").disabled = state.page >= pages;
  $("key-header").textContent = $("group-by").value === "model" ? "Model" : "Team";
  for (const th of $("activity").tHead.rows[0].cells) {
    th.classList.toggle("sorted", th.dataset.sort === key);
    th.classList.toggle("descending", th.dataset.sort === key && descending);
  }
}

/// Hands a fetched file to the browser's downloads.
function save(blob, name) {
  const link = element("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function downloadCsv() {
  const month = $("end-date").value.slice(0, 7);
  try {
    const q = workspaceQuery(new URLSearchParams({ month }));
    const response = await api(`/billing/export.csv?${q}`, { raw: true });
    save(await response.blob(), `routero-${state.workspace || "org"}-${month}.csv`);
  } catch (e) {
    showError(e);
  }
}

// ---------------------------------------------------------------- wallet

let walletRun = 0;

let invoicesRun = 0;

/// The final invoices and this month's draft, newest first.
async function refreshInvoices() {
  const run = ++invoicesRun;
  try {
    const q = workspaceQuery(new URLSearchParams());
    const month = isoDate(new Date()).slice(0, 7);
    const [finals, draft] = await Promise.all([
      api(`/billing/invoices?${q}`),
      api(`/billing/invoices/${month}?${q}`),
    ]);
    if (run !== invoicesRun) return;
    renderInvoices(
      [...finals.filter((i) => i.month !== draft.month), draft]
        .sort((a, b) => (a.month < b.month ? 1 : -1)),
    );
  } catch (e) {
    if (run === invoicesRun) showError(e);
  }
}

async function refreshWallet() {
  const run = ++walletRun;
  try {
    const q = workspaceQuery(new URLSearchParams());
    // A refresh keeps the older transactions the reader has loaded.
    const [wallet, page] = await Promise.all([
      api(`/billing/wallet?${q}`),
      state.olderLoaded ? null : api(`/billing/transactions?${q}&limit=20`),
    ]);
    if (run !== walletRun) return;
    clearError();
    state.currency = wallet.currency;
    setMoney("wallet-balance", wallet.balance);
    setMoney("wallet-paid", wallet.paid_remaining);
    setMoney("wallet-granted", wallet.granted_remaining);
    setMoney("wallet-debited", wallet.usage_debited);
    $("top-up-currency").value = wallet.currency;
    if (!$("top-up-key").value) $("top-up-key").value = newKey();
    const admin = state.principal.role === "admin";
    $("top-up-submit").disabled = !admin;
    if (!admin) message("top-up-message", "Only an admin may top up this wallet.", false);
    if (page) {
      $("transactions").tBodies[0].replaceChildren();
      appendTransactions(page);
    }
  } catch (e) {
    if (run === walletRun) showError(e);
  }
}

function appendTransactions(page) {
  const body = $("transactions").tBodies[0];
  for (const entry of page.entries) {
    const tr = element("tr");
    tr.dataset.key = entry.idempotency_key;
    const amount = element("td", money(entry.amount), "num");
    amount.dataset.value = entry.amount;
    tr.append(
      element("td", entry.at.replace("T", " ").slice(0, 19)),
      element("td", entry.kind.replace(/_/g, " ")),
      amount,
      element("td", entry.idempotency_key, "key"),
      element("td", entry.memo || ""),
    );
    body.append(tr);
  }
  state.cursor = page.next_cursor;
  $("more-transactions").hidden = !page.next_cursor;
}

async function moreTransactions() {
  try {
    const q = workspaceQuery(new URLSearchParams({ limit: "20", cursor: state.cursor }));
    appendTransactions(await api(`/billing/transactions?${q}`));
    state.olderLoaded = true;
  } catch (e) {
    showError(e);
  }
}

function renderInvoices(invoices) {
  const body = $("invoices").tBodies[0];
  body.replaceChildren();
  for (const invoice of invoices) {
    const tr = element("tr");
    tr.dataset.month = invoice.month;
    const total = element("td", money(invoice.total), "num");
    total.dataset.value = invoice.total;
    const download = element("td");
    const link = element("button", "CSV", "link");
    link.type = "button";
    link.addEventListener("click", () => downloadInvoice(invoice.month));
    download.append(link);
    tr.append(
      element("td", invoice.month),
      element("td", invoice.status === "draft" ? "open (draft)" : "final"),
      element("td", invoice.number || "—"),
      element("td", money(invoice.managed_spend), "num"),
      total,
      download,
    );
    body.append(tr);
  }
}

async function downloadInvoice(month) {
  try {
    const q = workspaceQuery(new URLSearchParams({ format: "csv" }));
    const response = await api(`/billing/invoices/${month}?${q}`, { raw: true });
    save(await response.blob(), `invoice-${state.workspace}-${month}.csv`);
  } catch (e) {
    showError(e);
  }
}

function newKey() {
  if (crypto.randomUUID) return `topup-${crypto.randomUUID()}`;
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `topup-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function message(id, text, ok) {
  const p = $(id);
  p.textContent = text;
  p.hidden = false;
  p.classList.toggle("ok", ok);
  p.classList.toggle("bad", !ok);
}

async function topUp(event) {
  event.preventDefault();
  const amount = $("top-up-amount").value.trim();
  const key = $("top-up-key").value.trim();
  $("top-up-submit").disabled = true;
  try {
    const response = await api(`/billing/wallet/topup?${workspaceQuery(new URLSearchParams())}`, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": key },
      body: JSON.stringify({ amount, currency: $("top-up-currency").value }),
      raw: true,
    });
    const entry = await response.json();
    const again = response.status === 200;
    message(
      "top-up-message",
      again
        ? `This key was used before: top-up #${entry.id} of ${money(entry.amount)} stands, nothing was added.`
        : `Topped up ${money(entry.amount)} (entry #${entry.id}).`,
      true,
    );
    $("top-up-amount").value = "";
    $("top-up-key").value = newKey();
    state.olderLoaded = false;
    await Promise.all([refreshWallet(), refreshInvoices()]);
  } catch (e) {
    message("top-up-message", e.message, false);
  } finally {
    $("top-up-submit").disabled = state.principal && state.principal.role !== "admin";
  }
}

// ---------------------------------------------------------------- wiring

function start() {
  const today = new Date();
  $("end-date").value = params.get("end_date") || isoDate(today);
  $("start-date").value = params.get("start_date") || isoDate(new Date(today.getTime() - 13 * 86400000));
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signIn($("token").value.trim());
    } catch (e) {
      state.token = "";
      $("sign-in-message").hidden = false;
      $("sign-in-message").textContent = e.status === 401 ? "That token was refused." : e.message;
    }
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("error-close").addEventListener("click", clearError);
  $("workspace").addEventListener("change", () => {
    state.workspace = $("workspace").value;
    state.teams.clear();
    state.models.clear();
    $("top-up-key").value = "";
    state.olderLoaded = false;
    route();
  });
  const refilter = () => {
    state.page = 1;
    refreshOverview();
  };
  for (const id of ["start-date", "end-date", "team-filter", "model-filter", "group-by"]) {
    $(id).addEventListener("change", refilter);
  }
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("page-size").addEventListener("change", () => {
    state.page = 1;
    renderTable();
  });
  $("prev-page").addEventListener("click", () => {
    state.page -= 1;
    renderTable();
  });
  $("next-page").addEventListener("click", () => {
    state.page += 1;
    renderTable();
  });
  for (const th of $("activity").tHead.rows[0].cells) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      state.sort = { key, descending: state.sort.key === key ? !state.sort.descending : key !== "key" };
      renderTable();
    });
  }
  $("download-csv").addEventListener("click", downloadCsv);
  $("top-up").addEventListener("submit", topUp);
  $("more-transactions").addEventListener("click", moreTransactions);
  window.addEventListener("hashchange", route);
  if (state.token) {
    signIn(state.token).catch((e) => signOut(e.status === 401 ? "The token was refused: sign in again." : e.message));
  } else {
    signOut("");
  }
}

start();
