// The rebalancer dashboard: plain JavaScript over the service's /v1 API, no build step.
// Every value from the API is put in the page as text (never as HTML).
"use strict";

const TOKEN_KEY = "rebalancer.token";
const STATE_ACTIONS = ["pause", "resume", "reduce-only", "halt", "flatten"];
let role = null;
let refreshTimer = null;
let stream = null;

const $ = (id) => document.getElementById(id);

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick") el.addEventListener("click", v);
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Column headers, right-aligned over the columns of figures.
const NUMERIC = new Set(["allocation", "measured", "intents", "orders", "fills", "turnover", "est. cost", "realised cost"]);
function header(name) {
  return h("th", NUMERIC.has(name) ? { class: "num" } : {}, name);
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${body.error || response.statusText}`);
  return body;
}

const canOperate = () => role === "operator" || role === "admin";
const canApprove = () => role === "approver" || role === "admin";
const fmt = (x, digits = 6) => (x === null || x === undefined ? "-" : Number(x).toPrecision(digits).replace(/\.?0+$/, ""));
const money = (x) => Number(x).toLocaleString("en-US", { maximumFractionDigits: 2 });
const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "-");

// -- sign-in ---------------------------------------------------------------------------------

async function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    const me = await api("/v1/whoami");
    role = me.role;
    $("who").textContent = `${me.name} (${me.role})`;
    $("sign-in").hidden = true;
    $("app").hidden = false;
    $("sign-out").hidden = false;
    document.body.dataset.role = role;
    await refresh();
    follow();
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("sign-in-error").textContent = `Sign-in failed: ${err.message}`;
  }
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  if (stream) stream.abort();
  location.reload();
}

// -- live updates: server-sent events read through fetch (the token stays in a header) ---------

async function follow() {
  stream = new AbortController();
  const live = $("live");
  for (;;) {
    try {
      const response = await fetch("/v1/events", {
        headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` },
        signal: stream.signal,
      });
      if (!response.ok) throw new Error(String(response.status));
      live.classList.add("on");
      $("live-text").textContent = "live";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const message = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          if (message.startsWith("event: change")) scheduleRefresh();
        }
      }
    } catch (err) {
      if (stream.signal.aborted) return;
    }
    live.classList.remove("on");
    $("live-text").textContent = "reconnecting";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refresh().catch((err) => console.error(err));
  }, 150);
}

// -- rendering -------------------------------------------------------------------------------

async function refresh() {
  const [portfolios, plans, stats, health, nodes] = await Promise.all([
    api("/v1/portfolios"),
    api("/v1/plans?limit=50"),
    api("/v1/plans/stats?buckets=48"),
    api("/v1/health"),
    api("/v1/nodes"),
  ]);
  renderPortfolios(portfolios.portfolios);
  renderWork(portfolios.portfolios, nodes.nodes);
  renderNodes(nodes.nodes);
  renderHistory(plans.plans, stats, health);
  document.body.dataset.rendered = String(Date.now());
}

function controls(portfolio, world) {
  if (!canOperate()) return null;
  const actions = world ? [...STATE_ACTIONS, "rebalance"] : STATE_ACTIONS;
  const scope = world ? `world ${world} of ${portfolio}` : `portfolio ${portfolio}`;
  return h(
    "span",
    { class: "controls" },
    actions.map((action) =>
      h(
        "button",
        {
          type: "button",
          class: action === "flatten" ? "danger" : null,
          "data-action": action,
          "data-world": world || null,
          onclick: () => command(portfolio, world, action, scope),
        },
        action,
      ),
    ),
  );
}

function renderPortfolios(portfolios) {
  const root = $("portfolios");
  root.replaceChildren();
  for (const p of portfolios) {
    const rows = p.worlds.map((w) => {
      const policy = (w.policies || [])[0];
      const measured = policy && policy.weights && policy.weights.world;
      const next = policy ? when(policy.next_check_at) : "-";
      return h(
        "tr",
        { "data-world": w.world_id },
        h("td", {}, w.world_id),
        h("td", { class: "num" }, fmt(w.alloc)),
        h("td", { class: "num" }, measured === undefined ? "-" : fmt(measured)),
        h("td", {}, h("span", { class: `mode ${w.trading_mode}` }, w.trading_mode)),
        h("td", {}, policy ? `${policy.status}` : "-"),
        h("td", {}, next),
        h("td", {}, w.held ? `${w.held.reason} (${w.held.event_ids.length})` : "-"),
        h("td", {}, controls(p.portfolio_id, w.world_id)),
      );
    });
    root.append(
      h(
        "div",
        { class: "card portfolio", "data-portfolio": p.portfolio_id },
        h(
          "h3",
          {},
          `${p.portfolio_id} `,
          h("span", { class: `mode ${p.trading.mode}` }, p.trading.mode),
          p.trading.by ? h("span", { class: "muted" }, ` by ${p.trading.by}: ${p.trading.reason}`) : null,
          " ",
          controls(p.portfolio_id, null),
        ),
        h("p", { class: "muted" }, `equity ${p.total_equity === null ? "-" : money(p.total_equity)}`),
        h(
          "table",
          { class: "worlds" },
          h(
            "thead",
            {},
            h("tr", {}, ["world", "allocation", "measured", "trading", "policy", "next check", "held", ""].map(header)),
          ),
          h("tbody", {}, rows),
        ),
        driftChart(p.worlds),
      ),
    );
  }
}

function driftChart(worlds) {
  const bars = [];
  for (const w of worlds) {
    for (const policy of w.policies || []) {
      const drift = Object.values(policy.drift || {});
      if (!drift.length) continue;
      const band = typeof policy.band === "number" ? policy.band : null;
      bars.push({ label: w.world_id, value: Math.max(...drift), band });
    }
  }
  if (!bars.length) return null;
  return h("figure", {}, h("figcaption", {}, "drift against the band"), barChart(bars));
}

// Bars of `value` (with a dashed `band` line if set); with `paired`, each slot holds the bar of
// `value` and, beside it, the bar of `pair` (null: nothing to draw), e.g. estimated vs realised.
function barChart(bars, paired = null) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const width = 420, height = 120, pad = 18;
  const top = Math.max(1e-12, ...bars.map((b) => Math.max(b.value, b.band || 0, b.pair || 0)));
  const step = (width - pad) / Math.max(bars.length, 1);
  const slot = paired ? step / 2 : step;
  const bar = (x, value, cls, text) => {
    const rect = document.createElementNS(ns, "rect");
    const barHeight = ((height - pad) * Math.max(value, 0)) / top;
    rect.setAttribute("x", String(x + 1));
    rect.setAttribute("y", String(height - pad - barHeight));
    rect.setAttribute("width", String(Math.max(slot - 2, 1)));
    rect.setAttribute("height", String(barHeight));
    rect.setAttribute("class", cls);
    const title = document.createElementNS(ns, "title");
    title.textContent = text;
    rect.append(title);
    svg.append(rect);
  };
  bars.forEach((b, i) => {
    const x = pad + i * step;
    const name = paired ? `${paired[0]} ` : "";
    bar(x, b.value, b.band !== null && b.value > b.band ? "bar over" : "bar", `${b.label}: ${name}${fmt(b.value)}`);
    if (paired && b.pair !== null && b.pair !== undefined) {
      bar(x + slot, b.pair, "bar pair", `${b.label}: ${paired[1]} ${fmt(b.pair)}`);
    }
    if (b.band !== null && b.band !== undefined) {
      const line = document.createElementNS(ns, "line");
      const y = height - pad - ((height - pad) * b.band) / top;
      line.setAttribute("x1", String(pad + i * step));
      line.setAttribute("x2", String(pad + (i + 1) * step));
      line.setAttribute("y1", String(y));
      line.setAttribute("y2", String(y));
      line.setAttribute("class", "band");
      svg.append(line);
    }
    if (bars.length <= 12) {
      const text = document.createElementNS(ns, "text");
      text.setAttribute("x", String(pad + i * step + 2));
      text.setAttribute("y", String(height - 4));
      text.textContent = b.label;
      svg.append(text);
    }
  });
  return svg;
}

function renderWork(portfolios, nodes) {
  const working = (planId) => nodes.filter((n) => n.alive && n.plans.includes(planId)).map((n) => n.venue);
  const proposals = portfolios.flatMap((p) => p.proposals.map((x) => ({ ...x, portfolio: p.portfolio_id })));
  $("proposals").replaceChildren(
    h("h3", {}, `Proposals (${proposals.length})`),
    proposals.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["plan", "portfolio", "worlds", "intents", "asked by", "expires", ""].map(header))),
          h(
            "tbody",
            {},
            proposals.map((x) =>
              h(
                "tr",
                { class: "proposal", "data-plan": x.plan_id },
                h("td", {}, x.plan_id),
                h("td", {}, x.portfolio),
                h("td", {}, x.worlds.join(", ")),
                h("td", { class: "num" }, x.intents),
                h("td", {}, x.requested_by || "allocation event"),
                h("td", {}, when(x.deadline)),
                h(
                  "td",
                  {},
                  canApprove()
                    ? [
                        h("button", { type: "button", "data-decision": "approve", onclick: () => decide(x.plan_id, "approve") }, "approve"),
                        h("button", { type: "button", "data-decision": "reject", onclick: () => decide(x.plan_id, "reject") }, "reject"),
                      ]
                    : null,
                ),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "none"),
  );
  const flights = portfolios.flatMap((p) =>
    p.worlds.filter((w) => w.in_flight).map((w) => ({ portfolio: p.portfolio_id, world: w.world_id, flight: w.in_flight })),
  );
  $("in-flight").replaceChildren(
    h("h3", {}, `Plans in flight (${flights.length})`),
    flights.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["plan", "portfolio", "world", "waiting for", "venues still working", "since"].map(header))),
          h(
            "tbody",
            {},
            flights.map((f) =>
              h("tr", {}, h("td", {}, f.flight.plan_id), h("td", {}, f.portfolio), h("td", {}, f.world),
                h("td", {}, f.flight.strategies.join(", ") || "-"),
                h("td", {}, working(f.flight.plan_id).join(", ") || "none"),
                h("td", {}, when(f.flight.planned_at))),
            ),
          ),
        )
      : h("p", { class: "muted" }, "none"),
  );
  const held = portfolios.flatMap((p) =>
    p.worlds.filter((w) => w.held).map((w) => ({ portfolio: p.portfolio_id, world: w.world_id, held: w.held })),
  );
  $("held").replaceChildren(
    h("h3", {}, `Held changes (${held.length})`),
    held.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["portfolio", "world", "reason", "events", "since"].map(header))),
          h(
            "tbody",
            {},
            held.map((x) =>
              h("tr", {}, h("td", {}, x.portfolio), h("td", {}, x.world), h("td", {}, x.held.reason),
                h("td", {}, x.held.event_ids.join(", ")), h("td", {}, when(x.held.since))),
            ),
          ),
        )
      : h("p", { class: "muted" }, "none"),
  );
}

function renderNodes(nodes) {
  $("nodes").replaceChildren(
    h("h3", {}, `Execution nodes (${nodes.length})`),
    nodes.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["node", "venue", "state", "last heartbeat", "working on", "orders", "fills"].map(header))),
          h(
            "tbody",
            {},
            nodes.map((n) =>
              h(
                "tr",
                { class: "node", "data-venue": n.venue, "data-alive": String(n.alive) },
                h("td", {}, n.node_id),
                h("td", {}, n.venue),
                h("td", {}, h("span", { class: `mode ${n.alive ? "active" : "halted"}` }, n.alive ? "alive" : n.stopped ? "stopped" : "silent")),
                h("td", {}, when(n.last_heartbeat)),
                h("td", {}, n.plans.join(", ") || "-"),
                h("td", { class: "num" }, n.counts.orders),
                h("td", { class: "num" }, n.counts.fills),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "none has reported"),
  );
}

// A plan's realised cost: fees + slippage its execution nodes reported ("-" before any fill).
function realisedCell(r) {
  if (!r) return h("td", { class: "num realised muted", title: "no execution node reported a fill" }, "-");
  const title = `fees ${money(r.fees)} + slippage ${money(r.slippage)} on ${r.fills} fills ` +
    `(${money(r.filled_notional)} filled, ${r.nodes} node runs)`;
  return h("td", { class: "num realised", title }, money(r.total));
}

function renderHistory(plans, stats, health) {
  $("plans").tBodies[0].replaceChildren(
    ...plans.map((p) =>
      h(
        "tr",
        { class: "plan", "data-plan": p.plan_id, "data-event": p.event_id },
        h("td", {}, when(p.created_at)),
        h("td", {}, p.plan_id),
        h("td", { class: `status-${p.status}` }, p.status),
        h("td", {}, p.policy ? `${p.policy} (${p.trigger})` : `event ${p.event_id}`),
        h("td", {}, p.worlds.join(", ")),
        h("td", { class: "num" }, p.intents),
        h("td", { class: "num" }, money(p.turnover)),
        h("td", { class: "num" }, money(p.estimated_cost)),
        realisedCell(p.realised_cost),
      ),
    ),
  );
  const series = (key, pair) =>
    stats.buckets.map((b) => ({ label: when(b.start), value: b[key], band: null, pair: pair ? b[pair] : null }));
  $("turnover-chart").replaceWith(Object.assign(barChart(series("turnover")), { id: "turnover-chart" }));
  const costs = barChart(series("estimated_cost", "realised_cost"), ["estimated", "realised"]);
  $("cost-chart").replaceWith(Object.assign(costs, { id: "cost-chart" }));
  $("health").textContent =
    `${stats.plans} plans recorded · ${health.events_dead_lettered} dead letters · ` +
    `consumer lag ${health.consumer_lag} · ${health.ready ? "ready" : "restoring state"}`;
}

// -- commands --------------------------------------------------------------------------------

function ask(title, warning) {
  const dialog = $("command");
  $("command-title").textContent = title;
  $("command-warning").hidden = !warning;
  $("command-warning").textContent = warning || "";
  $("command-reason").value = "";
  return new Promise((resolve) => {
    const cancel = () => { dialog.close(); resolve(null); };
    $("command-cancel").onclick = cancel;
    $("command-form").onsubmit = (event) => {
      event.preventDefault();
      const reason = $("command-reason").value.trim();
      if (!reason) return;
      dialog.close();
      resolve(reason);
    };
    dialog.showModal();
  });
}

async function command(portfolio, world, action, scope) {
  const warning =
    action === "flatten"
      ? `Flatten ${scope}: every key is closed to zero now, reduce-only, and the scope stays halted until an explicit resume.`
      : null;
  const reason = await ask(`${action}: ${scope}`, warning);
  if (reason === null) return;
  const path = world
    ? `/v1/portfolios/${encodeURIComponent(portfolio)}/worlds/${encodeURIComponent(world)}/${action}`
    : `/v1/portfolios/${encodeURIComponent(portfolio)}/${action}`;
  await submit(path, reason);
}

async function decide(planId, decision) {
  const reason = await ask(`${decision} plan ${planId}`, null);
  if (reason === null) return;
  await submit(`/v1/plans/${encodeURIComponent(planId)}/${decision}`, reason);
}

async function submit(path, reason) {
  try {
    const accepted = await api(path, { method: "POST", body: { reason } });
    $("health").textContent = `command ${accepted.command_id} accepted`;
  } catch (err) {
    alert(`Refused: ${err.message}`);
  }
}

// -- start -----------------------------------------------------------------------------------

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn($("token").value);
});
$("sign-out").addEventListener("click", signOut);
if (sessionStorage.getItem(TOKEN_KEY)) signIn(sessionStorage.getItem(TOKEN_KEY));
