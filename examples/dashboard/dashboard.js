// The Routero spend dashboard: plain browser JavaScript over the public billing API.
//
// Every number comes from the API as it answered: money is the API's decimal string,
// rounded for people by string arithmetic (never through a float), with the exact
// string kept in `data-value` and the tooltip; totals are the API's own. Floats
// serve only the chart's geometry. Data is written with textContent, so ids from the
// gateway are shown, never interpreted.
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
  constructor(status, title, detail, problem = {}) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail || "";
    this.problem = problem;
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
      throw new ApiError(response.status, problem.title || `HTTP ${response.status}`, problem.detail, problem);
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

// Currencies whose minor unit is not two digits (ISO 4217); the rest have two.
const MINOR_DIGITS = { BIF: 0, CLP: 0, DJF: 0, GNF: 0, ISK: 0, JPY: 0, KMF: 0, KRW: 0, PYG: 0, RWF: 0, UGX: 0, VND: 0, VUV: 0, XAF: 0, XOF: 0, XPF: 0, BHD: 3, IQD: 3, JOD: 3, KWD: 3, LYD: 3, OMR: 3, TND: 3 };
const SYMBOLS = { USD: "$", EUR: "€", GBP: "£", JPY: "¥" };

function minorDigits() {
  const digits = MINOR_DIGITS[state.currency];
  return digits === undefined ? 2 : digits;
}

/// A decimal string rounded half to even at `digits` places, by string arithmetic:
/// its sign, whole digits and exactly `digits` fraction digits (fewer when it had fewer).
function roundDecimal(value, digits) {
  const negative = value.startsWith("-");
  const [whole, fraction = ""] = value.replace(/^[-+]/, "").split(".");
  if (fraction.length <= digits) return { negative, whole, fraction };
  const rest = fraction.slice(digits);
  const half = "5".padEnd(rest.length, "0");
  let kept = (whole + fraction.slice(0, digits)).split("");
  const odd = Number(kept[kept.length - 1]) % 2 === 1;
  if (rest > half || (rest === half && odd)) {
    let i = kept.length - 1;
    for (; i >= 0 && kept[i] === "9"; i -= 1) kept[i] = "0";
    if (i < 0) kept.unshift("1");
    else kept[i] = String(Number(kept[i]) + 1);
  }
  kept = kept.join("");
  return { negative, whole: kept.slice(0, kept.length - digits) || "0", fraction: kept.slice(kept.length - digits) };
}

/// An amount for people: thousands separators, the currency's symbol, between `least`
/// and `most` fraction digits (rounded half to even, trailing zeros dropped to `least`).
function formatAmount(value, least, most) {
  const r = roundDecimal(String(value), most);
  let fraction = r.fraction.replace(/0+$/, "");
  if (fraction.length < least) fraction = fraction.padEnd(least, "0");
  const whole = r.whole.replace(/^0+(?=\d)/, "").replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const zero = /^[0,]*$/.test(whole) && /^0*$/.test(fraction);
  const sign = r.negative && !zero ? "−" : "";
  const number = fraction ? `${whole}.${fraction}` : whole;
  const symbol = SYMBOLS[state.currency];
  return symbol ? `${sign}${symbol}${number}` : `${sign}${number} ${state.currency || ""}`.trim();
}

/// Spend: up to $0.0001 (two digits past the minor unit), the product page's resolution.
function money(value) {
  return formatAmount(value, minorDigits(), minorDigits() + 2);
}

/// A balance or an invoice total: at the currency's scale.
function balanceMoney(value) {
  return formatAmount(value, minorDigits(), minorDigits());
}

/// Writes an amount for people into `element`, keeping the exact string.
function showMoney(element, value, format = money) {
  element.dataset.value = value;
  element.textContent = format(value);
  element.title = `exactly ${value} ${state.currency || ""}`.trim();
  return element;
}

function setMoney(id, value, format = money) {
  showMoney($(id), value, format);
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
  let workspaces = principal.workspaces || [];
  if (!principal.workspaces) {
    // An org-wide principal: the org's analytics, and each of its wallets.
    select.append(new Option("(all of the org's)", ""));
    workspaces = (await api("/billing/wallets")).wallets.map((w) => w.workspace);
  }
  for (const w of workspaces) select.append(new Option(w, w));
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
    $("wallet-all").hidden = Boolean(state.workspace);
    $("wallet-one").hidden = !state.workspace;
    refreshWallet();
    if (state.workspace) refreshInvoices();
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
  if ($("currency-filter").value) q.set("currency", $("currency-filter").value);
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
    // The analytics are in the currency they name (never two added together).
    state.currency = activity.metadata.currency || state.currency;
    renderTrend(trend);
    collectOptions(activity.results);
    state.rows = rowsOf(activity.results);
    state.totals = activity.metadata;
    renderChart(activity.results);
    renderTable();
    $("updated").textContent = new Date().toLocaleTimeString("en-GB");
    $("updated").dataset.count = String(Number($("updated").dataset.count || 0) + 1);
  } catch (e) {
    if (run !== overviewRun) return;
    if (e.problem && Array.isArray(e.problem.currencies) && !$("currency-filter").value) {
      // Spend in several currencies: offer them, and show one at a time.
      chooseCurrency(e.problem.currencies);
      refreshOverview();
      return;
    }
    showError(e);
  }
}

/// Shows the currency filter with `codes`, the wallet's currency chosen when it is one.
function chooseCurrency(codes) {
  const select = $("currency-filter");
  select.replaceChildren(...codes.map((c) => new Option(c, c)));
  select.value = codes.includes(state.currency) ? state.currency : codes[0];
  $("currency-label").hidden = false;
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
  setMoney("card-balance", o.balance, balanceMoney);
  // The month's spend is in its own currency, which may not be the wallet's.
  state.currency = o.spend_currency || o.currency;
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
  // A previous period with far fewer days of spend than the range (the data starts
  // inside it) is no base for a ratio.
  const comparable = t.change_ratio !== null && t.change_ratio !== undefined
    && 2 * t.previous_days_with_spend >= t.days_with_spend;
  trend.dataset.comparable = String(comparable);
  const ratio = comparable
    ? `${compareDecimal(t.change, "0") >= 0 ? "+" : ""}${(Number(t.change_ratio) * 100).toFixed(1)} %`
    : `no earlier data to compare (spend on ${t.previous_days_with_spend} of the days before)`;
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
  const highest = Math.max(0, ...results.map((r) => Number(r.metrics.spend)));
  const ticks = niceTicks(highest);
  const max = ticks[ticks.length - 1];
  const plot = height - bottom - top;
  const step = (width - left) / Math.max(days.length, 1);
  for (const tick of ticks) {
    const y = top + plot - (max > 0 ? (tick / max) * plot : 0);
    chart.append(svg("line", { x1: left, y1: y, x2: width, y2: y, class: tick === 0 ? "axis" : "grid" }));
    const label = svg("text", { x: left - 6, y: y + 4, class: "tick y-tick", "text-anchor": "end" });
    label.textContent = tickLabel(tick, ticks[1] || 1);
    chart.append(label);
  }
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

/// Round axis values from 0 past `highest`: steps of 1, 2 or 5 times a power of ten,
/// four or five of them.
function niceTicks(highest) {
  if (!(highest > 0)) return [0, 1];
  const rough = highest / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  const out = [];
  for (let i = 0; i * step < highest + step * 1e-9 || out.length < 2; i += 1) out.push(i * step);
  if (out[out.length - 1] < highest) out.push(out.length * step);
  return out;
}

/// An axis value with as many digits as its step needs ("$0.05", "$1,200").
function tickLabel(value, step) {
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return formatAmount(value.toFixed(Math.min(digits, 10)), 0, Math.min(digits, 10));
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
    tr.append(showMoney(element("td", undefined, "num"), row.spend));
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
  setMoney("total-spend", t.total_spend);
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

/// The org's wallets, for an org-wide principal with no workspace chosen.
async function refreshAllWallets() {
  const run = ++walletRun;
  try {
    const { wallets } = await api("/billing/wallets");
    if (run !== walletRun) return;
    clearError();
    const body = $("wallets").tBodies[0];
    body.replaceChildren();
    for (const w of wallets) {
      state.currency = w.currency;
      const tr = element("tr");
      tr.dataset.workspace = w.workspace;
      tr.append(
        element("td", w.workspace),
        element("td", w.currency),
        showMoney(element("td", undefined, "num"), w.balance, balanceMoney),
        showMoney(element("td", undefined, "num"), w.paid_remaining, balanceMoney),
        showMoney(element("td", undefined, "num"), w.usage_debited),
      );
      body.append(tr);
    }
  } catch (e) {
    if (run === walletRun) showError(e);
  }
}

async function refreshWallet() {
  if (!state.workspace) return refreshAllWallets();
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
    setMoney("wallet-balance", wallet.balance, balanceMoney);
    setMoney("wallet-paid", wallet.paid_remaining, balanceMoney);
    setMoney("wallet-granted", wallet.granted_remaining, balanceMoney);
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
    const amount = showMoney(element("td", undefined, "num"), entry.amount);
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
    const total = showMoney(element("td", undefined, "num"), invoice.total, balanceMoney);
    const download = element("td");
    const link = element("button", "CSV", "link");
    link.type = "button";
    link.addEventListener("click", () => downloadInvoice(invoice.month));
    download.append(link);
    tr.append(
      element("td", invoice.month),
      element("td", invoice.status === "draft" ? "open (draft)" : "final"),
      element("td", invoice.number || "—"),
      showMoney(element("td", undefined, "num"), invoice.managed_spend),
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
    // A replay (200, `replayed`) wrote nothing: say so, not "Topped up".
    message(
      "top-up-message",
      entry.replayed
        ? `Replayed: this key already topped up ${balanceMoney(entry.amount)} (entry #${entry.id}); the balance did not change.`
        : `Topped up ${balanceMoney(entry.amount)} (entry #${entry.id}).`,
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
    $("currency-filter").replaceChildren(new Option("", ""));
    $("currency-label").hidden = true;
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
  for (const id of ["start-date", "end-date", "team-filter", "model-filter", "group-by", "currency-filter"]) {
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
