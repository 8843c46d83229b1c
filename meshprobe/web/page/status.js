// meshprobe status page: draws /v1/status (and /v1/status/edges/<id> for one edge) and fetches
// them again every `refresh_seconds`, without reloading the page. Vanilla JS, no dependencies.
// Every value from the server is set as text (textContent), never parsed as HTML: failure
// details and certificate names are written by the servers being probed.
"use strict";

(() => {
  const STATE_TEXT = { failing: "failing", over_budget: "over budget", no_data: "no data", ok: "ok" };
  const STATE_RANK = { failing: 0, over_budget: 1, no_data: 2, ok: 3 };
  const TRUST_TEXT = {
    shares_root: "shares root",
    ca_mismatch: "CA MISMATCH",
    unreachable: "unreachable",
    unknown: "unknown",
  };
  const SVG = "http://www.w3.org/2000/svg";

  const view = {
    status: null, // the last /v1/status document
    edge: null, // the last edge document, while an edge is open
    sort: { key: "state", dir: "ascending" },
    filter: "",
    refresh: 5,
    timer: 0,
    updated: 0,
    generation: 0, // bumped on navigation, so a late answer for the old view is dropped
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- formatting ------------------------------------------------------------------------------

  function ms(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const v = seconds * 1000;
    return (v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)) + " ms";
  }

  function pct(ratio) {
    if (ratio === null || ratio === undefined) return "–";
    return (ratio * 100).toFixed(ratio === 1 || ratio === 0 ? 0 : 1) + " %";
  }

  function when(unix) {
    if (!unix) return "–";
    const d = new Date(unix * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function clock(unix) {
    return when(unix).slice(11);
  }

  function fromNow(unix) {
    if (!unix) return "–";
    const s = unix - Date.now() / 1000;
    const a = Math.abs(s);
    const text = a < 3600 ? `${Math.round(a / 60)} min` : a < 172800 ? `${Math.round(a / 3600)} h`
      : `${Math.round(a / 86400)} d`;
    return s >= 0 ? `in ${text}` : `${text} ago`;
  }

  // Text with a line-break opportunity after each "/" (SPIFFE IDs, URLs), as text nodes.
  function breakable(cls, text) {
    const span = el("span", { class: cls });
    String(text).split(/(?<=\/)/).forEach((part, i) => {
      if (i) span.append(el("wbr"));
      span.append(part);
    });
    return span;
  }

  function badge(state) {
    return el("span", { class: `badge s-${state}`, text: STATE_TEXT[state] || state });
  }

  function trustBadge(trust) {
    return el("span", { class: `badge t-${trust}`, text: TRUST_TEXT[trust] || trust });
  }

  // -- fetching --------------------------------------------------------------------------------

  async function fetchJson(path) {
    const resp = await fetch(path, { cache: "no-store", credentials: "same-origin" });
    if (!resp.ok) {
      const error = new Error(`HTTP ${resp.status}`);
      error.status = resp.status;
      throw error;
    }
    return resp.json();
  }

  function openEdgeId() {
    const m = /^#\/edge\/([0-9a-f]{1,64})$/.exec(location.hash);
    return m ? m[1] : null;
  }

  async function update() {
    clearTimeout(view.timer);
    const generation = view.generation;
    const id = openEdgeId();
    try {
      const [status, edge] = await Promise.all([
        fetchJson("v1/status"),
        id ? fetchJson(`v1/status/edges/${id}`).catch((e) => (e.status === 404 ? null : Promise.reject(e)))
          : Promise.resolve(null),
      ]);
      if (generation !== view.generation) return;
      view.status = status;
      view.edge = edge;
      view.refresh = Math.max(1, status.refresh_seconds || 5);
      view.updated = status.generated_at;
      render(id);
      setFreshness(null);
    } catch (error) {
      if (generation !== view.generation) return;
      setFreshness(error);
    } finally {
      if (generation === view.generation) view.timer = setTimeout(update, view.refresh * 1000);
    }
  }

  function setFreshness(error) {
    const node = $("freshness");
    if (error) {
      node.className = "stale";
      const seen = view.updated ? `; showing data from ${clock(view.updated)}` : "";
      node.textContent = `update failed (${error.message})${seen}`;
    } else {
      node.className = "";
      node.textContent = `updated ${clock(view.updated)} · every ${view.refresh} s · ` +
        `window: last ${view.status.window_results} results per edge`;
    }
  }

  function render(id) {
    const status = view.status;
    $("cluster").textContent = `· ${status.cluster}`;
    document.title = `meshprobe ${status.cluster}`;
    const showEdge = id !== null;
    $("overview").hidden = showEdge;
    $("edge-view").hidden = !showEdge;
    if (showEdge) {
      renderEdge(view.edge, id);
    } else {
      renderMatrix(status);
      renderEdges();
      renderInstance(status.instance);
    }
  }

  // -- the matrix ------------------------------------------------------------------------------

  function renderMatrix(status) {
    const columns = status.matrix.columns;
    $("matrix-caption").textContent = `As seen from ${status.matrix.source}: success and ` +
      `latency over the last ${status.window_results} results of each edge, against the budget.`;
    const head = el("tr", {}, el("th", { scope: "col", text: "from \\ to" }));
    for (const c of columns) {
      head.append(el("th", { scope: "col", text: c.cluster + (c.scope ? ` (${c.scope})` : "") }));
    }
    const latency = el("tr", {}, el("th", { scope: "row", text: status.matrix.source }));
    for (const c of columns) {
      const budget = c.budget_seconds === null ? "–" : c.budget_seconds.min === c.budget_seconds.max
        ? ms(c.budget_seconds.min) : `${ms(c.budget_seconds.min)}–${ms(c.budget_seconds.max)}`;
      const counts = Object.entries(c.states).filter(([s, n]) => n && s !== "ok")
        .map(([s, n]) => `${n} ${STATE_TEXT[s]}`);
      latency.append(el("td", { "data-cluster": c.cluster, "data-state": c.state },
        badge(c.state),
        el("span", { class: "figures" },
          `${pct(c.success_ratio)} success · p50 ${ms(c.p50_seconds)} · p99 ${ms(c.p99_seconds)}`),
        el("span", { class: "figures muted" },
          `budget ${budget} · ${c.edges} edge${c.edges === 1 ? "" : "s"}` +
          (counts.length ? ` (${counts.join(", ")})` : ""))));
    }
    const trust = el("tr", {}, el("th", { scope: "row", text: "peer trust" }));
    for (const c of columns) {
      let cell;
      if (c.cluster === status.matrix.source) {
        cell = el("td", { "data-trust": "self" }, el("span", { class: "badge t-self", text: "this instance" }));
      } else if (c.peer) {
        cell = el("td", { "data-trust": c.peer.trust }, trustBadge(c.peer.trust),
          c.peer.detail === "ok" ? null : el("span", { class: "detail", text: c.peer.detail }));
      } else {
        cell = el("td", { "data-trust": "none" }, el("span", { class: "badge t-none", text: "no peer" }));
      }
      trust.append(cell);
    }
    $("matrix").tHead.replaceChildren(head);
    $("matrix").tBodies[0].replaceChildren(latency, trust);
  }

  // -- the edges table -------------------------------------------------------------------------

  const SORT_KEYS = {
    state: (e) => STATE_RANK[e.state],
    target: (e) => e.target,
    cluster: (e) => e.cluster,
    kind: (e) => e.scheme,
    last: (e) => (e.last ? e.last.reason || "" : "~"),
    success: (e) => e.window.success_ratio ?? -1,
    p50: (e) => e.window.p50_seconds ?? Infinity,
    p99: (e) => e.window.p99_seconds ?? Infinity,
    budget: (e) => e.budget_seconds,
    served: (e) => (e.last && e.last.served_by) || "~",
    identity: (e) => (e.tls && e.tls.identity) || "~",
    expiry: (e) => (e.tls && e.tls.earliest_expiry) || Infinity,
  };

  function searchable(e) {
    return [e.target, e.cluster, e.scope, e.kind, e.scheme, STATE_TEXT[e.state], e.state, e.url,
      e.last && e.last.reason, e.last && e.last.detail, e.last && e.last.served_by,
      e.tls && e.tls.identity].filter(Boolean).join(" ").toLowerCase();
  }

  function sortedEdges() {
    const { key, dir } = view.sort;
    const get = SORT_KEYS[key];
    const sign = dir === "ascending" ? 1 : -1;
    const words = view.filter.toLowerCase().split(/\s+/).filter(Boolean);
    const edges = view.status.edges.filter((e) => {
      const text = searchable(e);
      return words.every((w) => text.includes(w));
    });
    // Stable: ties keep the server's order (failing first, then cluster, target, kind).
    return edges.map((e, i) => [e, i]).sort(([a, i], [b, j]) => {
      const x = get(a);
      const y = get(b);
      if (x < y) return -sign;
      if (x > y) return sign;
      return i - j;
    }).map(([e]) => e);
  }

  function renderEdges() {
    const focused = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.edge : null;
    const rows = sortedEdges().map(edgeRow);
    $("edges").tBodies[0].replaceChildren(...rows);
    for (const th of $("edges").tHead.rows[0].cells) {
      th.setAttribute("aria-sort", th.dataset.sort === view.sort.key ? view.sort.dir : "none");
    }
    const total = view.status.edges.length;
    $("edge-count").textContent = rows.length === total ? `${total} edges`
      : `${rows.length} of ${total} edges`;
    if (focused) {
      const again = $("edges").querySelector(`a[data-edge="${focused}"]`);
      if (again) again.focus();
    }
  }

  function edgeRow(e) {
    const last = e.last;
    const lastCell = el("td", { class: "last" });
    if (!last) {
      lastCell.append(el("span", { class: "muted", text: "not probed yet" }));
    } else if (last.success) {
      lastCell.append(`ok in ${ms(last.duration_seconds)}`,
        last.status_code ? `, HTTP ${last.status_code}` : "");
    } else {
      lastCell.append(el("strong", { class: "reason", text: last.reason }),
        el("span", { class: "detail", text: last.detail }));
    }
    const tls = e.tls;
    return el("tr", { "data-id": e.id, "data-state": e.state },
      el("td", {}, badge(e.state)),
      el("td", {}, el("a", { href: `#/edge/${e.id}`, "data-edge": e.id, text: e.target })),
      el("td", { text: `${e.cluster}` }),
      el("td", { text: e.scheme }),
      lastCell,
      el("td", { class: "num", text: pct(e.window.success_ratio) }),
      el("td", { class: "num", text: ms(e.window.p50_seconds) }),
      el("td", { class: "num", text: ms(e.window.p99_seconds) }),
      el("td", { class: "num", text: ms(e.budget_seconds) }),
      el("td", { text: (last && last.served_by) || "–" }),
      el("td", {}, breakable("identity", tls ? (tls.identity || "–") + (tls.verified ? "" : ` (${tls.reason})`) : "–")),
      el("td", { title: tls && tls.earliest_expiry ? when(tls.earliest_expiry) : null,
        text: tls && tls.earliest_expiry ? `${tls.earliest_expiry_role} ${fromNow(tls.earliest_expiry)}` : "–" }));
  }

  // -- the instance ----------------------------------------------------------------------------

  function facts(pairs) {
    const dl = el("dl", { class: "facts" });
    for (const [name, value] of pairs) {
      dl.append(el("dt", { text: name }), el("dd", {}, value));
    }
    return dl;
  }

  function renderInstance(inst) {
    const bundle = inst.trust_bundle;
    const roots = el("ul", {});
    for (const r of bundle.roots) {
      roots.append(el("li", {}, r.subject, " ", el("span", { class: "muted", text: `expires ${when(r.not_after)} (${fromNow(r.not_after)})` }),
        el("br"), el("span", { class: "fingerprint", text: r.fingerprint_sha256 })));
    }
    const more = bundle.root_count !== null && bundle.root_count > bundle.roots.length
      ? ` (${bundle.roots.length} of ${bundle.root_count} shown)` : "";
    const lag = inst.loop_lag;
    const discovery = inst.discovery.length ? inst.discovery.map((d) =>
      `${d.source}: ${d.up ? "up" : "DOWN"}, ${d.errors} errors`).join("; ") : "static configuration only";
    const targets = Object.entries(inst.targets).map(([k, n]) => `${n} ${k}`).join(", ") || "none";
    $("instance").replaceChildren(
      facts([
        ["cluster", inst.cluster],
        ["version", inst.version],
        ["trust domain", inst.trust_domain],
        ["config reload", `${inst.config_reload.success ? "ok" : "FAILED"}, ${when(inst.config_reload.at)}`],
        ["event-loop lag", lag.observations ? `mean ${ms(lag.mean_seconds)}, p99 ≤ ${lag.p99_le_seconds === null ? "+Inf" : ms(lag.p99_le_seconds)} (since start)` : "–"],
        ["discovery", discovery],
        ["targets", targets],
      ]),
      facts([
        ["trust bundle", bundle.source === "system" ? "system roots" :
          `${bundle.root_count} root${bundle.root_count === 1 ? "" : "s"}${more}, reload ${bundle.reload_success ? "ok" : "FAILED"}` +
          (bundle.skipped_roots ? `, ${bundle.skipped_roots} skipped` : "")],
        ["our roots", bundle.roots.length ? roots : "–"],
      ]));
  }

  // -- one edge --------------------------------------------------------------------------------

  function renderEdge(doc, id) {
    const heading = $("edge-heading");
    if (!doc) {
      heading.textContent = `No edge ${id}`;
      $("edge-facts").replaceChildren(el("dd", { text: "It was removed, or the link is stale." }));
      for (const t of ["phases", "chain", "failures"]) $(t).tBodies[0].replaceChildren();
      $("chart").replaceChildren();
      $("chart-caption").textContent = "";
      $("chain-verdict").textContent = "";
      return;
    }
    const e = doc.edge;
    heading.textContent = `${e.target} → ${e.cluster} (${e.scheme})`;
    const tls = doc.tls;
    const last = e.last;
    const served = Object.entries(doc.served_total).map(([c, n]) => `${c}: ${n}`).join(", ");
    const failures = Object.entries(doc.failures_total).map(([r, n]) => `${r}: ${n}`).join(", ");
    $("edge-facts").replaceChildren(...facts([
      ["state", badge(e.state)],
      ["URL", e.url],
      ["scope, discovery", `${e.scope}, ${e.discovery}`],
      ["budget, interval", `${ms(e.budget_seconds)}, every ${e.interval_seconds} s`],
      ["window", `${e.window.results} results since ${when(e.window.since)}: ${pct(e.window.success_ratio)} success, ` +
        `p50 ${ms(e.window.p50_seconds)}, p99 ${ms(e.window.p99_seconds)}, ${e.window.over_budget} over budget`],
      ["last result", last ? (last.success ? `ok in ${ms(last.duration_seconds)} at ${when(last.at)}`
        : `${last.reason} at ${when(last.at)}: ${last.detail}`) : "not probed yet"],
      ["answered by", served || "–"],
      ["TLS identity", tls ? `${tls.identity || "–"} (${tls.version || "?"}, ${tls.cipher || "?"})` : "–"],
      ["since start", `${e.probes_total} probes, ${doc.over_budget_total} over budget` +
        (failures ? `, failures ${failures}` : "")],
    ]).childNodes);
    drawChart(doc);
    $("phases").tBodies[0].replaceChildren(...Object.entries(doc.phases).map(([p, s]) =>
      el("tr", {}, el("th", { scope: "row", text: p }), el("td", { class: "num", text: ms(s) }))));
    if (!tls) {
      $("chain-verdict").textContent = !["https", "tls", "grpcs"].includes(e.scheme) ? "No TLS on this edge."
        : "The last probe saw no chain (it failed before the handshake).";
      $("chain").tBodies[0].replaceChildren();
    } else {
      $("chain-verdict").replaceChildren(
        el("span", { class: `badge s-${tls.verified ? "ok" : "failing"}`, text: tls.verified ? "verified" : tls.reason }),
        tls.verified && tls.detail === "verified" ? "" : ` ${tls.detail}`,
        tls.earliest_expiry ? ` · earliest expiry: ${tls.earliest_expiry_role} ${fromNow(tls.earliest_expiry)}` : "");
      const rows = tls.chain.map((c) => el("tr", {},
        el("th", { scope: "row", text: c.role + (c.from_bundle ? " (our bundle)" : "") }),
        el("td", {}, el("span", { class: "detail", text: c.subject || "(empty)" })),
        el("td", {}, el("span", { class: "detail", text: c.issuer })),
        el("td", { title: when(c.not_after), text: `${when(c.not_after)} (${fromNow(c.not_after)})` }),
        el("td", {}, el("span", { class: "fingerprint", text: c.fingerprint_sha256 })),
        el("td", { text: c.verdict.replaceAll("_", " ") })));
      if (tls.chain_more) rows.push(el("tr", {}, el("td", { colspan: 6, text: `… and ${tls.chain_more} more` })));
      $("chain").tBodies[0].replaceChildren(...rows);
    }
    $("failures").tBodies[0].replaceChildren(...(doc.failures.length ? doc.failures.map((f) => el("tr", {},
      el("td", { text: when(f.last_at) }),
      el("td", { class: "num", text: f.count }),
      el("td", { text: f.reason }),
      el("td", {}, el("span", { class: "detail", text: f.detail })))) : [el("tr", {}, el("td", { colspan: 4, text: "none kept" }))]));
  }

  function drawChart(doc) {
    const chart = $("chart");
    const W = 640;
    const H = 180;
    const left = 52;
    const right = 8;
    const top = 10;
    const bottom = 20;
    const budget = doc.edge.budget_seconds;
    const recent = doc.recent;
    const slowest = Math.max(0, ...recent.map((r) => (r.reason ? 0 : r.duration_seconds)));
    const ymax = Math.max(budget * 1.25, slowest * 1.1, 0.001);
    const n = Math.max(doc.window_results, recent.length, 2);
    const x = (i) => left + (i + (n - recent.length)) * (W - left - right) / (n - 1);
    const y = (s) => top + (H - top - bottom) * (1 - Math.min(s, ymax) / ymax);
    const parts = [];
    for (const f of [0, 0.5, 1]) {
      parts.push(svg("line", { class: "grid", x1: left, x2: W - right, y1: y(ymax * f), y2: y(ymax * f) }));
      parts.push(svg("text", { x: left - 4, y: y(ymax * f) + 4, "text-anchor": "end" }, ms(ymax * f)));
    }
    const points = [];
    recent.forEach((r, i) => {
      if (r.reason) {
        const cx = x(i);
        parts.push(svg("line", { class: "fail", x1: cx, x2: cx, y1: top, y2: H - bottom },
          undefined));
        parts[parts.length - 1].append(svg("title", {}, `${when(r.at)}: ${r.reason}`));
      } else {
        points.push(`${x(i).toFixed(1)},${y(r.duration_seconds).toFixed(1)}`);
        const dot = svg("circle", { class: "ok", cx: x(i), cy: y(r.duration_seconds), r: 2.5 });
        dot.append(svg("title", {}, `${when(r.at)}: ${ms(r.duration_seconds)}`));
        parts.push(dot);
      }
    });
    if (points.length > 1) parts.unshift(svg("polyline", { class: "line", points: points.join(" ") }));
    parts.push(svg("line", { class: "budget", x1: left, x2: W - right, y1: y(budget), y2: y(budget) }));
    parts.push(svg("text", { x: left + 4, y: y(budget) - 4 }, `budget ${ms(budget)}`));
    parts.push(svg("text", { x: left, y: H - 4 }, `last ${recent.length} results, oldest left`));
    chart.replaceChildren(...parts);
    const failed = recent.filter((r) => r.reason).length;
    const w = doc.edge.window;
    $("chart-caption").textContent = `${recent.length} results: p50 ${ms(w.p50_seconds)}, ` +
      `p99 ${ms(w.p99_seconds)}, budget ${ms(budget)} (dashed line), ${failed} failed ` +
      "(red vertical lines).";
  }

  // -- events ----------------------------------------------------------------------------------

  function navigate() {
    view.generation += 1;
    const previous = view.edge && view.edge.edge ? view.edge.edge.id : null;
    update().then(() => {
      if (openEdgeId()) {
        $("edge-heading").focus();
      } else if (previous) {
        const link = $("edges").querySelector(`a[data-edge="${previous}"]`);
        if (link) link.focus();
      }
    });
  }

  function init() {
    $("filter").addEventListener("input", (event) => {
      view.filter = event.target.value;
      if (view.status) renderEdges();
    });
    for (const th of $("edges").tHead.rows[0].cells) {
      th.querySelector("button").addEventListener("click", () => {
        const key = th.dataset.sort;
        view.sort = {
          key,
          dir: view.sort.key === key && view.sort.dir === "ascending" ? "descending" : "ascending",
        };
        if (view.status) renderEdges();
      });
    }
    window.addEventListener("hashchange", navigate);
    update();
  }

  init();
})();
