// edge_runtime operator page: plain JS, no build step, no third-party code. Data is only ever put into
// the page as text (textContent, attributes), never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let session = null;

function $(selector) {
  return document.querySelector(selector);
}

// el("tag", {attr: value, class: "x", text: "..."}, ...children)
function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "class") node.setAttribute("class", value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const method = options.method || "GET";
  if (method !== "GET" && session && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  const response = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  let body = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("application/json")) body = await response.json();
  if (!response.ok) {
    const message = body && body.message ? body.message : body && body.error ? body.error : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return body;
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind || text}`, text });
}

function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString();
}

// A station's verdict is kept beside defect events; shown in the same columns.
function asRow(e) {
  if (e.kind !== "verdict") return e;
  const top = (e.defects || []).reduce((a, d) => (a && a.probability >= d.probability ? a : d), null);
  return {
    ...e,
    camera: e.station,
    roi: `part ${e.part_id}`,
    tag: e.reason ? `${e.verdict} (${e.reason})` : e.verdict,
    probability: top ? top.probability : NaN,
    captured_at: e.triggered_at,
  };
}

// The snapshot's own id: a verdict's snapshots are named apart from the verdict (one per camera).
function snapshotSrc(e) {
  const name = String(e.snapshot).split("/").pop().replace(/\.jpg$/, "");
  return `/ui/api/snapshots/${encodeURIComponent(name)}.jpg`;
}

function badgeFor(e) {
  if (e.kind === "verdict") return badge(e.verdict, e.verdict === "pass" ? "ok" : "started");
  return badge(e.kind, e.kind === "started" ? "started" : "ok");
}

function probabilityText(p, digits) {
  return Number.isFinite(Number(p)) ? Number(p).toFixed(digits) : "–";
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.round(seconds / 60)} min`;
}

function kv(dl, pairs) {
  dl.replaceChildren();
  for (const [key, value] of pairs) {
    dl.append(el("dt", { text: key }), el("dd", {}, value instanceof Node ? value : document.createTextNode(value ?? "–")));
  }
}

function showError(node, error) {
  node.hidden = !error;
  node.textContent = error ? String(error.message || error) : "";
}

function nav(page) {
  const links = [
    ["overview", "/ui/", "Overview"],
    ["events", "/ui/events", "Events"],
    ["test", "/ui/test", "Test"],
    ["config", "/ui/config", "Configuration"],
  ];
  $("#nav").replaceChildren(
    ...links.map(([name, href, label]) => el("a", { href, class: name === page ? "active" : "", text: label })),
  );
  const who = $("#who");
  who.replaceChildren(document.createTextNode(`${session.role}${session.how === "loopback" ? " (loopback)" : ""}`));
  if (session.how === "session") {
    who.append(
      el("button", {
        class: "secondary",
        type: "button",
        text: "Log out",
        onclick: async () => {
          await api("/ui/api/logout", { method: "POST" });
          location.href = "/ui/login";
        },
      }),
    );
  }
}

function live(handlers, camera = null) {
  const source = new EventSource(camera === null ? "/ui/api/live" : `/ui/api/live?camera=${encodeURIComponent(camera)}`);
  for (const [name, handler] of Object.entries(handlers)) {
    if (name === "open" || name === "error") continue;
    source.addEventListener(name, (message) => handler(JSON.parse(message.data)));
  }
  source.addEventListener("open", () => handlers.open && handlers.open());
  source.addEventListener("error", () => handlers.error && handlers.error());
  return source;
}

// ---- drawing predictions over an image ------------------------------------------------------------

// Boxes are fractions of the frame; the SVG's viewBox is the image's pixel size, so text keeps its shape.
function drawOverlay(svg, width, height, rois, boxes) {
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.replaceChildren();
  // Sizes in screen pixels whatever the picture's size: the SVG is scaled to the width it is shown at.
  const shown = svg.getBoundingClientRect().width || width;
  const px = width / shown;
  const line = 2 * px;
  const font = 14 * px;
  const rect = (b, cls) =>
    el("svg:rect", {
      class: cls,
      x: b.left * width,
      y: b.top * height,
      width: b.width * width,
      height: b.height * height,
      "stroke-width": line,
    });
  const label = (text, x, y, cls) =>
    el("svg:text", { class: cls, x, y, "font-size": font, "stroke-width": Math.max(1, font / 8), text });
  for (const roi of rois) {
    svg.append(rect(roi.rect, "roi"));
    svg.append(label(roi.name, roi.rect.left * width + line * 2, roi.rect.top * height + font + line, "roi-label"));
  }
  for (const box of boxes) svg.append(rect(box.box, `box${box.active ? " active" : ""}`));
  // Labels over every box, best first, each kept inside the frame and left out where it would cover one
  // already drawn (a defect found in adjacent cells would otherwise print its labels over each other).
  const placed = [];
  for (const box of [...boxes].sort((a, b) => b.probability - a.probability)) {
    const text = `${box.tag} ${box.probability.toFixed(2)}`;
    const w = text.length * font * 0.6; // about, for a bold sans-serif
    const x = Math.max(0, Math.min(box.box.left * width, width - w));
    const y = Math.max(font, box.box.top * height - line * 2);
    const area = { x0: x, x1: x + w, y0: y - font, y1: y };
    if (placed.some((p) => p.x0 < area.x1 && area.x0 < p.x1 && p.y0 < area.y1 && area.y0 < p.y1)) continue;
    placed.push(area);
    svg.append(label(text, x, y, "box-label"));
  }
}

function topPrediction(inspection) {
  let best = null;
  for (const roi of inspection.rois) {
    for (const p of roi.predictions) if (!best || p.probability > best.probability) best = Object.assign({ roi: roi.rect ? roi.name : null }, p);
  }
  return best;
}

// ---- pages --------------------------------------------------------------------------------------------

async function overviewPage() {
  const inspections = {};
  let board = null;
  const thumbs = {};
  const cards = {};
  const backlog = {};
  const state = $("#live-state");

  function cameraCard(id) {
    if (cards[id]) return cards[id];
    const card = el("article", { class: "card camera-card", "data-camera": id });
    cards[id] = card;
    return card;
  }

  function renderCameras() {
    const grid = $("#cameras");
    const ids = Object.keys(board.cameras).sort();
    if (!ids.length) {
      grid.replaceChildren(el("p", { class: "muted", text: "no camera configured" }));
      return;
    }
    grid.replaceChildren(...ids.map(cameraCard));
    for (const id of ids) renderCamera(id);
  }

  function renderCamera(id) {
    const status = board && board.cameras[id];
    if (!status) return;
    const card = cameraCard(id);
    const inspection = inspections[id];
    const best = inspection ? topPrediction(inspection) : null;
    const active = inspection ? inspection.rules.filter((r) => r.active) : [];
    if (!thumbs[id]) thumbs[id] = el("img", { class: "thumb", alt: `camera ${id}` });
    const dl = el("dl", { class: "kv" });
    kv(dl, [
      ["decoder", `${status.decoder || "–"} / ${status.decode || "–"}`],
      ["fps", status.fps === null ? "–" : String(status.fps)],
      ["frame age", el("span", { "data-age-of": status.last_frame_at ?? "", text: fmtAge(status.last_frame_age_s) })],
      ["prediction", best ? `${best.tag} ${best.probability.toFixed(2)}${best.roi ? ` (${best.roi})` : ""}` : "–"],
      [
        "rules",
        active.length
          ? el("span", {}, ...active.map((r) => badge(`${r.tag} @ ${r.roi}`, "started")))
          : inspection ? "clear" : "–",
      ],
    ]);
    if (status.last_error) dl.append(el("dt", { text: "error" }), el("dd", { class: "error", text: status.last_error }));
    card.replaceChildren(
      el("h3", {}, el("a", { href: `/ui/camera?id=${encodeURIComponent(id)}`, text: id }), badge(status.state)),
      el("a", { href: `/ui/camera?id=${encodeURIComponent(id)}` }, thumbs[id]),
      dl,
    );
  }

  function renderModel() {
    const m = board.model;
    kv($("#model-card"), [
      ["status", badge(m.status)],
      ["id", m.id],
      ["task", m.task],
      ["labels", m.labels ? m.labels.join(", ") : "–"],
      ["device", m.device],
      ["source", m.source],
      ["error", m.error],
    ]);
  }

  function renderSinks() {
    const rows = Object.entries(board.sinks).sort().map(([name, s]) => {
      const b = backlog[name] || {};
      const target = Object.entries(s).filter(([k]) => !["connected", "last_error"].includes(k));
      return el(
        "tr",
        { "data-sink": name },
        el("td", { text: name }),
        el("td", {}, s.connected === undefined ? el("span", { class: "muted", text: "n/a" }) : badge(s.connected ? "connected" : "down", s.connected ? "ok" : "bad")),
        el("td", { text: target.map(([k, v]) => `${k}: ${v}`).join(", ") || "–" }),
        el("td", { text: b.depth === undefined ? "–" : String(b.depth) }),
        el("td", {}, el("span", { "data-age-of": b.oldest_at ?? "", text: b.oldest_at ? fmtAge(Date.now() / 1000 - skew - b.oldest_at) : b.depth === undefined ? "–" : "none waiting" })),
        el("td", { class: s.last_error ? "error" : "", text: s.last_error || "" }),
      );
    });
    $("#sinks tbody").replaceChildren(...rows);
  }

  function renderStations(stations) {
    const ids = Object.keys(stations).sort();
    $("#stations-section").hidden = !ids.length;
    const rows = ids.map((id) => {
      const s = stations[id];
      const last = s.last;
      const lastCell = last
        ? el("td", {}, badgeFor(last), document.createTextNode(` ${last.part_id}${last.reason ? ` (${last.reason})` : ""}, ${last.latency_ms} ms, ${fmtTime(last.triggered_at)}`))
        : el("td", { class: "muted", text: "none yet" });
      return el(
        "tr",
        { "data-station": id },
        el("td", { text: id }),
        el("td", { text: s.cameras.join(", ") }),
        el("td", { text: String(s.parts) }),
        el("td", { text: String(s.passes) }),
        el("td", { text: String(s.fails) }),
        el("td", { class: s.no_verdicts ? "error" : "", text: String(s.no_verdicts) }),
        el("td", { text: String(s.pending) }),
        lastCell,
      );
    });
    $("#stations tbody").replaceChildren(...rows);
  }

  function eventItem(raw) {
    const e = asRow(raw);
    return el(
      "li",
      { "data-event": e.id },
      badgeFor(e),
      el("strong", { text: e.tag }),
      el("span", { text: `${e.camera}/${e.roi}` }),
      el("span", { text: `p=${probabilityText(e.probability, 2)}` }),
      el("span", { class: "muted", text: fmtTime(e.captured_at) }),
    );
  }

  const recent = $("#recent");
  if (session.history) {
    try {
      const page = await api("/ui/api/events?limit=10");
      recent.replaceChildren(...page.events.map(eventItem));
    } catch (error) {
      recent.replaceChildren(el("li", { class: "error", text: error.message }));
    }
  }

  // Ages tick between pushes (a stalled camera's frame age keeps growing) without asking the server.
  let skew = 0;
  setInterval(() => {
    for (const node of document.querySelectorAll("[data-age-of]")) {
      const at = Number(node.dataset.ageOf);
      if (node.dataset.ageOf !== "" && at > 0) node.textContent = fmtAge(Math.max(0, Date.now() / 1000 - skew - at));
    }
  }, 1000);

  const thumbShown = {};
  live({
    open: () => (state.textContent = "live"),
    error: () => (state.textContent = "reconnecting…"),
    board: (data) => {
      board = data;
      skew = Date.now() / 1000 - data.now;
      renderModel();
      renderCameras();
      renderSinks();
    },
    inspection: (data) => {
      inspections[data.camera] = data;
      const now = Date.now();
      const img = thumbs[data.camera];
      if (img && (!thumbShown[data.camera] || now - thumbShown[data.camera] > 1000)) {
        thumbShown[data.camera] = now;
        img.src = `/ui/api/cameras/${encodeURIComponent(data.camera)}/frame.jpg?width=320&seq=${data.sequence}`;
      }
      renderCamera(data.camera);
    },
    backlog: (data) => {
      skew = Date.now() / 1000 - data.now;
      for (const name of Object.keys(backlog)) delete backlog[name];
      Object.assign(backlog, data.sinks);
      if (board) renderSinks();
    },
    event: (e) => {
      recent.prepend(eventItem(e));
      while (recent.children.length > 20) recent.lastChild.remove();
    },
    stations: (data) => renderStations(data),
  });
}

async function cameraPage() {
  const id = new URLSearchParams(location.search).get("id");
  $("#title").textContent = `Camera ${id}`;
  const img = $("#frame");
  const svg = $("#overlay");
  let busy = false;
  let pending = null;
  let shownUrl = null;

  // One frame at a time: while one loads, only the newest inspection waits (the server caps the rate).
  async function show(inspection) {
    if (busy) {
      pending = inspection;
      return;
    }
    busy = true;
    try {
      const response = await fetch(`/ui/api/cameras/${encodeURIComponent(id)}/frame.jpg?width=1280`, { credentials: "same-origin" });
      if (response.ok) {
        const sequence = Number(response.headers.get("X-Inspection-Sequence"));
        const url = URL.createObjectURL(await response.blob());
        await new Promise((resolve) => {
          img.onload = resolve;
          img.onerror = resolve;
          img.src = url;
        });
        if (shownUrl) URL.revokeObjectURL(shownUrl);
        shownUrl = url;
        // Draw the inspection the frame belongs to (a newer one may have arrived meanwhile).
        const drawn = sequence === inspection.sequence ? inspection : latest[sequence] || inspection;
        draw(drawn);
      }
    } finally {
      busy = false;
      if (pending) {
        const next = pending;
        pending = null;
        show(next);
      }
    }
  }

  const latest = {};
  function draw(inspection) {
    const rois = inspection.rois.filter((r) => r.rect);
    const active = new Set(inspection.rules.filter((r) => r.active).map((r) => `${r.roi}/${r.tag}`));
    const boxes = [];
    for (const roi of inspection.rois) {
      for (const p of roi.predictions) if (p.box) boxes.push(Object.assign({ active: active.has(`${roi.name}/${p.tag}`) }, p));
    }
    drawOverlay(svg, inspection.size.width, inspection.size.height, rois, boxes);
    $("#frame-info").textContent = `frame ${inspection.sequence}, captured ${fmtTime(inspection.captured_at)}, ${inspection.size.width}x${inspection.size.height}, model ${inspection.model}`;
    const predictions = $("#predictions");
    predictions.replaceChildren(
      ...inspection.rois.map((roi) =>
        el(
          "div",
          { "data-roi": roi.name },
          el("strong", { text: roi.name }),
          el(
            "table",
            {},
            el("tbody", {}, ...roi.predictions.slice(0, 8).map((p) => el("tr", {}, el("td", { text: p.tag }), el("td", { text: p.probability.toFixed(3) })))),
          ),
        ),
      ),
    );
    const rules = $("#rules");
    rules.replaceChildren(
      ...(inspection.rules.length
        ? inspection.rules.map((r) =>
            el("div", {}, badge(r.active ? "defect" : "clear", r.active ? "started" : "ok"), document.createTextNode(` ${r.tag} @ ${r.roi}: ${r.hits} of the last ${r.n} frames (k=${r.k})`)),
          )
        : [el("span", { class: "muted", text: "no rules" })]),
    );
  }

  live({
    board: (data) => {
      const s = data.cameras[id];
      if (!s) {
        kv($("#status"), [["state", "not running"]]);
        return;
      }
      kv($("#status"), [
        ["state", badge(s.state)],
        ["url", s.url],
        ["decoder", `${s.decoder || "–"}${s.decoder_note ? ` (${s.decoder_note})` : ""}`],
        ["decode", `${s.decode || "–"} ${s.decode_note || ""}`],
        ["resolution", s.resolution || "–"],
        ["fps", s.fps === null ? "–" : String(s.fps)],
        ["frame age", fmtAge(s.last_frame_age_s)],
        ["frames", String(s.frames)],
        ["error", s.last_error],
      ]);
    },
    inspection: (data) => {
      if (data.camera !== id) return;
      latest[data.sequence] = data;
      for (const key of Object.keys(latest)) if (Number(key) < data.sequence - 20) delete latest[key];
      show(data);
    },
  }, id);
}

async function eventsPage() {
  const form = $("#filters");
  const tbody = $("#events tbody");
  const older = $("#older");
  const error = $("#events-error");
  let next = null;
  try {
    const facets = await api("/ui/api/facets");
    for (const c of facets.cameras) $("#f-camera").append(el("option", { value: c, text: c }));
    for (const t of facets.tags) $("#f-tag").append(el("option", { value: t, text: t }));
  } catch (e) {
    showError(error, e);
  }

  function params() {
    const q = new URLSearchParams();
    for (const name of ["camera", "tag", "kind"]) {
      const value = form.elements[name].value;
      if (value) q.set(name, value);
    }
    for (const name of ["since", "until"]) {
      const value = form.elements[name].value;
      if (value) {
        const when = new Date(value);
        q.set(name, Number.isNaN(when.getTime()) ? value : when.toISOString());
      }
    }
    q.set("limit", "25");
    return q;
  }

  function row(raw) {
    const e = asRow(raw);
    const snap = e.snapshot ? el("img", { class: "snap", src: snapshotSrc(e), alt: "snapshot", loading: "lazy" }) : el("span", { class: "muted", text: "none" });
    return el(
      "tr",
      { class: "clickable", "data-event": e.id, onclick: () => detail(e.id) },
      el("td", {}, snap),
      el("td", { text: fmtTime(e.captured_at) }),
      el("td", { text: e.camera }),
      el("td", { text: e.roi }),
      el("td", { text: e.tag }),
      el("td", {}, badgeFor(e)),
      el("td", { text: probabilityText(e.probability, 3) }),
    );
  }

  async function load(append) {
    const q = params();
    if (append && next) q.set("before", next);
    try {
      const page = await api(`/ui/api/events?${q}`);
      showError(error, null);
      const rows = page.events.map(row);
      if (append) tbody.append(...rows);
      else tbody.replaceChildren(...rows);
      if (!append && !rows.length) tbody.append(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "no events match" })));
      next = page.next_before;
      older.hidden = !next;
    } catch (e) {
      showError(error, e);
    }
  }

  async function detail(eventId) {
    const dialog = $("#detail");
    try {
      const e = await api(`/ui/api/events/${encodeURIComponent(eventId)}`);
      $("#detail-title").textContent =
        e.kind === "verdict"
          ? `${e.verdict}${e.reason ? ` (${e.reason})` : ""}: part ${e.part_id} at station ${e.station}`
          : `${e.kind} ${e.tag} on ${e.camera}/${e.roi}`;
      const img = $("#detail-snapshot");
      img.hidden = !e.snapshot;
      if (e.snapshot) img.src = snapshotSrc(e);
      $("#detail-json").textContent = JSON.stringify(e, null, 2);
      dialog.showModal();
    } catch (err) {
      showError(error, err);
    }
  }

  $("#detail-close").addEventListener("click", () => $("#detail").close());
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load(false);
  });
  $("#f-reset").addEventListener("click", () => {
    form.reset();
    load(false);
  });
  older.addEventListener("click", () => load(true));
  await load(false);
}

async function testPage() {
  const drop = $("#drop");
  const error = $("#test-error");
  let last = null;

  function render() {
    if (!last) return;
    const detector = last.predictions.some((p) => p.boundingBox);
    $("#threshold").closest("label").hidden = !detector;
    const threshold = detector ? Number($("#threshold").value) : 0;
    $("#threshold-value").textContent = threshold.toFixed(2);
    const img = $("#tested");
    const boxes = last.predictions
      .filter((p) => p.boundingBox && p.probability >= threshold)
      .map((p) => ({ tag: p.tagName, probability: p.probability, box: p.boundingBox }));
    drawOverlay($("#test-overlay"), img.naturalWidth, img.naturalHeight, [], boxes);
    $("#test-predictions tbody").replaceChildren(
      ...last.predictions
        .slice(0, 30)
        .map((p) => el("tr", { class: p.probability >= threshold ? "" : "muted" }, el("td", { text: p.tagName }), el("td", { text: p.probability.toFixed(4) }))),
    );
  }

  async function test(file) {
    showError(error, null);
    try {
      const result = await api("/ui/api/predict", {
        method: "POST",
        body: file,
        headers: { "Content-Type": file.type || "application/octet-stream" },
      });
      const img = $("#tested");
      await new Promise((resolve, reject) => {
        img.onload = resolve;
        img.onerror = () => reject(new Error("the browser cannot show this image (the model read it)"));
        img.src = URL.createObjectURL(file);
      });
      last = result;
      $("#result").hidden = false;
      render();
    } catch (e) {
      showError(error, e);
    }
  }

  $("#file").addEventListener("change", (e) => e.target.files[0] && test(e.target.files[0]));
  $("#threshold").addEventListener("input", render);
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) test(e.dataTransfer.files[0]);
  });
}

async function configPage() {
  const result = $("#config-result");

  async function refresh() {
    const config = await api("/ui/api/config");
    $("#effective").textContent = JSON.stringify(config.effective, null, 2);
    $("#desired").textContent = JSON.stringify(config.desired, null, 2);
    const s = config.status;
    kv($("#config-status"), [
      ["outcome", badge(s.status)],
      ["desired version", s.desired_version === null ? "–" : String(s.desired_version)],
      ["changes", (s.changes || []).join(", ") || "–"],
      ["error", s.error],
    ]);
    $("#sections").textContent = config.editable_sections.join(", ");
    $("#editor").hidden = !config.can_edit;
    $("#readonly").hidden = config.can_edit;
  }

  function patch() {
    try {
      const value = JSON.parse($("#patch").value);
      if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("a JSON object, please");
      return value;
    } catch (e) {
      result.className = "error";
      result.textContent = `not valid JSON: ${e.message}`;
      return null;
    }
  }

  async function send(path, method) {
    const body = patch();
    if (!body) return;
    try {
      const answer = await api(path, { method, body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
      result.className = "ok-text";
      result.textContent = method === "POST" ? "valid: nothing applied yet" : `applied: ${(answer.changes || []).join(", ") || "no change"}`;
      await refresh();
    } catch (e) {
      result.className = "error";
      result.textContent = e.message;
    }
  }

  $("#check").addEventListener("click", () => send("/ui/api/config/check", "POST"));
  $("#apply").addEventListener("click", () => send("/ui/api/config", "PATCH"));
  await refresh();
}

async function loginPage() {
  const form = $("#login");
  const error = $("#login-error");
  // The handler first, before anything is awaited: a submit must never go out as a plain form (a GET
  // with the key in the URL).
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("/ui/api/login", {
        method: "POST",
        body: JSON.stringify({ key: $("#key").value }),
        headers: { "Content-Type": "application/json" },
      });
      // Back to the page that sent here: a path of this page's own, never another site.
      const next = new URLSearchParams(location.search).get("next") || "";
      location.href = next.startsWith("/ui/") && !next.startsWith("//") ? next : "/ui/";
    } catch (err) {
      showError(error, err);
    }
  });
  const possible = await api("/ui/api/login");
  if (!possible.keys) {
    showError(error, "No key is set on this runtime: set ui.viewer_key (or server.admin_key) in its configuration to log in from here.");
    for (const input of form.querySelectorAll("input, button")) input.disabled = true;
  }
}

async function main() {
  const page = document.body.dataset.page;
  if (page === "login") return loginPage();
  try {
    session = await api("/ui/api/session");
  } catch (e) {
    if (e.status === 401) location.href = `/ui/login?next=${encodeURIComponent(location.pathname + location.search)}`;
    return;
  }
  nav(page);
  const pages = { overview: overviewPage, camera: cameraPage, events: eventsPage, test: testPage, config: configPage };
  await pages[page]();
}

main();
