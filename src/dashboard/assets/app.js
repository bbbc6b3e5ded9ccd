// The taskspool dashboard: a page per view, drawn from the JSON API and redrawn every 2 s.
// Task data is user data: it only ever becomes text nodes (never HTML), and the server's
// content security policy allows no inline script.
"use strict";

const STATES = ["scheduled", "ready", "running", "retrying", "waiting",
  "succeeded", "failed", "expired", "revoked"];
const REFRESH_MS = 2000;
let token = sessionStorage.getItem("taskspool-token") || "";
let actions = false;
let timer = null;

// An element with attributes (`on*` as listeners) and children (strings become text).
function el(tag, attrs, ...children) {
  const node = tag === "svg" || tag === "rect" || tag === "line" || tag === "text" || tag === "g"
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Replaces `root`'s children (absent ones — null, undefined — are left out).
function fill(root, ...children) {
  root.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

async function api(path, method) {
  const headers = {};
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, { method: method || "GET", headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.statusText;
    throw new Error(message);
  }
  return body;
}

function showError(e) {
  document.getElementById("error").textContent = e ? String(e.message || e) : "";
}

// Runs a change, then redraws; errors (a wrong token, a state that forbids it) are shown.
async function change(path) {
  try {
    await api(path, "POST");
    showError(null);
  } catch (e) {
    showError(e);
  }
  refresh();
}

function stateBadge(state) {
  return el("span", { class: "state state-" + state, "data-state": state }, state);
}

function when(time) {
  return time ? new Date(time).toLocaleString() : "—";
}

function ago(ms) {
  if (ms < 1000) return ms + " ms";
  if (ms < 120000) return Math.round(ms / 1000) + " s";
  if (ms < 7200000) return Math.round(ms / 60000) + " min";
  return Math.round(ms / 3600000) + " h";
}

function taskLink(id) {
  return el("a", { href: "#/task/" + id }, "#" + id);
}

function table(head, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { class: h.num ? "num" : null }, h.label || h)))),
    el("tbody", {}, rows));
}

// Succeeded and failed per minute over the last 15 minutes, summed over every series.
function chart(metrics) {
  const minutes = Array.from({ length: 15 }, () => ({ succeeded: 0, failed: 0 }));
  for (const series of metrics) {
    (series.per_minute || []).forEach((o, i) => {
      if (minutes[i]) {
        minutes[i].succeeded += o.succeeded;
        minutes[i].failed += o.failed;
      }
    });
  }
  const width = 600, height = 140, bar = width / 15;
  const top = Math.max(1, ...minutes.map((m) => m.succeeded + m.failed));
  const bars = minutes.map((m, i) => {
    const ok = (m.succeeded / top) * (height - 20);
    const bad = (m.failed / top) * (height - 20);
    return el("g", {},
      el("rect", { x: i * bar + 2, y: height - ok - bad, width: bar - 4, height: ok, fill: "#2a8a4a" }),
      el("rect", { x: i * bar + 2, y: height - bad, width: bar - 4, height: bad, fill: "#c73737" }));
  });
  return el("div", {},
    el("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": "tasks finished per minute" },
      bars, el("text", { x: 4, y: 14, fill: "#6b7483", "font-size": 11 }, "max " + top + "/min")),
    el("div", { class: "legend muted" },
      el("span", { class: "ok" }, "■ succeeded"), el("span", { class: "bad" }, "■ failed"),
      el("span", {}, "per minute, last 15 minutes (newest right)")));
}

const views = {
  async overview(root) {
    const o = await api("/api/overview");
    actions = o.actions;
    document.getElementById("reach").textContent = {
      owner: "in the owning process", socket: "live, through the owner's socket",
      closed_file: "closed file, read-only",
    }[o.reach] || o.reach;
    document.getElementById("token-form").hidden = o.reach === "closed_file";
    const rows = o.stats.queues.map((q) => el("tr", { "data-queue": q.name },
      el("td", {}, q.name, " ", q.paused ? el("span", { class: "badge" }, "paused") : null),
      STATES.map((s) => el("td", { class: "num" },
        q.counts[s] ? el("a", { href: `#/tasks?state=${s}&queue=${encodeURIComponent(q.name)}` }, q.counts[s]) : "0")),
      el("td", {}, actions
        ? el("button", { onclick: () => change(`/api/queues/${encodeURIComponent(q.name)}/${q.paused ? "resume" : "pause"}`) },
          q.paused ? "Resume" : "Pause")
        : null)));
    fill(root,
      el("h2", {}, "Queues"),
      o.stats.queues.length ? table([{ label: "queue" }, ...STATES.map((s) => ({ label: s, num: true })), ""], rows)
        : el("p", { class: "muted" }, "No tasks yet."),
      el("h2", {}, "Throughput"),
      chart(o.stats.metrics || []),
      el("h2", {}, "Oldest ready task"),
      o.oldest_ready
        ? el("p", { id: "oldest" }, taskLink(o.oldest_ready.id), ` ${o.oldest_ready.name} on ${o.oldest_ready.queue}, due ${ago(o.oldest_ready.waiting_ms)} ago`)
        : el("p", { class: "muted", id: "oldest" }, "Nothing is waiting."),
      el("h2", {}, "Limits"),
      o.limits.length ? table(["on", "rate", "concurrency", "per key"], o.limits.map((l) => el("tr", {},
        el("td", {}, Object.keys(l.target)[0] + " " + Object.values(l.target)[0]),
        el("td", {}, l.rate ? JSON.stringify(l.rate) : "—"),
        el("td", {}, l.concurrency ?? "—"), el("td", {}, l.per_key ?? "—"))))
        : el("p", { class: "muted" }, "No limits."),
      o.stats.unregistered.length ? el("div", {}, el("h2", {}, "Waiting for a worker that knows them"),
        table(["task name", { label: "tasks", num: true }],
          o.stats.unregistered.map(([name, n]) => el("tr", {}, el("td", {}, name), el("td", { class: "num" }, n))))) : null);
  },

  async tasks(root, params, fixed) {
    const query = new URLSearchParams(params);
    if (fixed) for (const [k, v] of Object.entries(fixed)) query.set(k, v);
    if (!root.querySelector("form.filters")) {
      const form = el("form", { class: "filters", onsubmit: (e) => {
        e.preventDefault();
        const data = new FormData(e.target);
        const id = data.get("id");
        if (id) { location.hash = "#/task/" + id; return; }
        const next = new URLSearchParams();
        for (const k of ["state", "queue", "name"]) if (data.get(k)) next.set(k, data.get(k));
        location.hash = (fixed ? "#/failures?" : "#/tasks?") + next.toString();
      } },
      fixed ? null : el("select", { name: "state" }, el("option", { value: "" }, "any state"),
        STATES.map((s) => el("option", { value: s, selected: query.get("state") === s }, s))),
      el("input", { name: "queue", placeholder: "queue", value: query.get("queue") || "" }),
      el("input", { name: "name", placeholder: "task name", value: query.get("name") || "" }),
      el("input", { name: "id", placeholder: "task id", inputmode: "numeric" }),
      el("button", { type: "submit" }, "Filter"));
      fill(root, el("h2", {}, fixed ? "Failures" : "Tasks"), form, el("div", { id: "rows" }));
    }
    const page = await api("/api/tasks?" + query.toString());
    const rows = page.tasks.map((t) => el("tr", { "data-task": t.id },
      el("td", {}, taskLink(t.id)), el("td", {}, t.name), el("td", {}, t.queue),
      el("td", {}, stateBadge(t.state)), el("td", { class: "num" }, t.attempts),
      el("td", {}, when(t.enqueued_at)),
      el("td", {}, t.errors.length ? t.errors[t.errors.length - 1].message : "")));
    const more = page.next !== null && page.next !== undefined
      ? el("a", { href: (fixed ? "#/failures?" : "#/tasks?") + (() => { const n = new URLSearchParams(params); n.set("after", page.next); return n.toString(); })() }, "Next page →")
      : null;
    fill(root.querySelector("#rows"),
      page.tasks.length ? table(["id", "name", "queue", "state", { label: "attempts", num: true }, "enqueued", "last error"], rows)
        : el("p", { class: "muted" }, "No tasks match."),
      el("p", {}, more));
  },

  failures(root, params) {
    return views.tasks(root, params, { state: "failed", newest: "true" });
  },

  async task(root, params, id) {
    const { task: t, workflow } = await api("/api/tasks/" + encodeURIComponent(id));
    const json = (v) => el("pre", {}, v === null || v === undefined ? "—" : JSON.stringify(v, null, 2));
    const buttons = actions ? el("p", {},
      ["failed", "expired", "revoked"].includes(t.state)
        ? el("button", { class: "primary", id: "retry", onclick: () => change(`/api/tasks/${t.id}/retry`) }, "Retry") : null,
      ["scheduled", "ready", "running", "retrying", "waiting"].includes(t.state)
        ? el("button", { id: "revoke", onclick: () => change(`/api/tasks/${t.id}/revoke`) }, "Revoke") : null) : null;
    fill(root,
      el("h2", {}, "Task ", taskLink(t.id), " ", t.name, " ", stateBadge(t.state)),
      buttons,
      el("dl", {},
        el("dt", {}, "queue"), el("dd", {}, t.queue),
        el("dt", {}, "priority"), el("dd", {}, t.priority),
        el("dt", {}, "attempts"), el("dd", {}, `${t.attempts} (retries allowed: ${t.max_retries})`),
        el("dt", {}, "enqueued"), el("dd", {}, when(t.enqueued_at)),
        el("dt", {}, "due"), el("dd", {}, when(t.due_at)),
        el("dt", {}, "started"), el("dd", {}, when(t.started_at)),
        el("dt", {}, "finished"), el("dd", {}, when(t.finished_at)),
        el("dt", {}, "expires"), el("dd", {}, when(t.expires_at)),
        t.schedule ? [el("dt", {}, "schedule"), el("dd", {}, t.schedule, " at ", when(t.fire_time))] : null,
        t.parents.length ? [el("dt", {}, "parents"), el("dd", {}, t.parents.map((p) => [taskLink(p), " "]))] : null,
        t.children.length ? [el("dt", {}, "children"), el("dd", {}, t.children.map((c) => [taskLink(c), " "]))] : null,
        workflow ? [el("dt", {}, "workflow"), el("dd", {}, taskLink(workflow.id), " ",
          STATES.filter((s) => workflow.counts[s]).map((s) => `${s} ${workflow.counts[s]}`).join(", "))] : null),
      el("h2", {}, "Arguments"), el("div", { id: "arguments" }, json(t.arguments)),
      el("h2", {}, "Output"), el("div", { id: "output" }, json(t.output)),
      t.progress !== null && t.progress !== undefined ? [el("h2", {}, "Progress"), json(t.progress)] : null,
      el("h2", {}, "Attempts with errors"),
      t.errors.length ? table(["attempt", "at", "kind", "message"], t.errors.map((e) => el("tr", {},
        el("td", {}, e.attempt), el("td", {}, when(e.at)), el("td", {}, typeof e.kind === "string" ? e.kind : JSON.stringify(e.kind)), el("td", {}, e.message))))
        : el("p", { class: "muted" }, "No errors."));
  },

  async schedules(root) {
    const list = await api("/api/schedules");
    fill(root, el("h2", {}, "Schedules"),
      list.length ? table(["name", "schedule", "task", "queue", "next fire", "last fire", ""], list.map((s) => el("tr", { "data-schedule": s.name },
        el("td", {}, s.name, " ", s.paused ? el("span", { class: "badge" }, "paused") : null),
        el("td", {}, s.schedule), el("td", {}, s.task), el("td", {}, s.queue),
        el("td", {}, when(s.next_fire)), el("td", {}, when(s.last_fire)),
        el("td", {}, actions ? [
          el("button", { onclick: () => change(`/api/schedules/${encodeURIComponent(s.name)}/${s.paused ? "resume" : "pause"}`) }, s.paused ? "Resume" : "Pause"),
          " ",
          el("button", { class: "run", onclick: () => change(`/api/schedules/${encodeURIComponent(s.name)}/run`) }, "Run now"),
        ] : null))))
        : el("p", { class: "muted" }, "No schedules."));
  },

  async pools(root) {
    const stats = await api("/api/stats");
    fill(root, el("h2", {}, "Pools"),
      stats.pools.length ? table(["queues", "tasks", { label: "concurrency", num: true }, { label: "busy", num: true }, { label: "threads", num: true }, { label: "abandoned", num: true }],
        stats.pools.map((p) => el("tr", {}, el("td", {}, p.queues.join(", ")), el("td", {}, p.tasks.join(", ")),
          el("td", { class: "num" }, p.concurrency), el("td", { class: "num" }, p.busy),
          el("td", { class: "num" }, p.threads), el("td", { class: "num" }, p.abandoned))))
        : el("p", { class: "muted" }, "No pool runs in the owning process."));
  },
};

// The view the address names: `#/`, `#/tasks?…`, `#/failures?…`, `#/task/ID`, `#/schedules`, `#/pools`.
function route() {
  const [path, search] = (location.hash.slice(1) || "/").split("?");
  const parts = path.split("/").filter(Boolean);
  const name = parts[0] || "overview";
  return { name: views[name] ? name : "overview", arg: parts[1], params: search || "" };
}

let current = "";
async function refresh() {
  clearTimeout(timer);
  const r = route();
  const key = location.hash;
  const root = document.getElementById("view");
  if (key !== current) {
    current = key;
    fill(root);
    for (const a of document.querySelectorAll("nav a")) {
      a.classList.toggle("active", a.dataset.view === r.name || (r.name === "task" && a.dataset.view === "tasks"));
    }
  }
  try {
    if (r.name !== "overview" && !actions) {
      // Whether changes are allowed is part of the overview.
      const o = await api("/api/overview").catch(() => null);
      if (o) actions = o.actions;
    }
    await views[r.name](root, r.params, r.arg);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    showError(null);
  } catch (e) {
    showError(e);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

window.addEventListener("hashchange", refresh);
window.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("token-form");
  form.hidden = false;
  document.getElementById("token").value = token;
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    token = document.getElementById("token").value;
    sessionStorage.setItem("taskspool-token", token);
    refresh();
  });
  refresh();
});
