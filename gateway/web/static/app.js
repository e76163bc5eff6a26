// The status page: polls /api/state every 2 s and draws it; acknowledges alarms after a
// login. Plain JavaScript with no dependencies: the site has no internet.
// Text from the configuration (names, messages) is only ever set with textContent.
"use strict";

(function () {
  const POLL_MS = 2000;
  const TICK_MS = 1000;

  let lang = pickLanguage();
  let state = null;        // the last /api/state answer
  let fetchedAt = 0;       // Date.now() when it arrived (countdowns run on from it)
  let me = null;           // {login, csrf} while logged in
  let canLogin = false;
  let pendingAck = null;   // an alarm to acknowledge once the login succeeds
  const drawn = {};        // section -> the key it was last drawn for
  let toastTimer = null;

  // --- words ----------------------------------------------------------------------------

  function pickLanguage() {
    const saved = localStorage.getItem("gateway.lang");
    if (saved === "zh" || saved === "en") return saved;
    return document.documentElement.lang === "en" ? "en" : "zh";
  }

  function t(key, ...args) {
    const words = window.I18N[lang] || window.I18N.en;
    let text = words[key];
    if (text === undefined) text = window.I18N.en[key];
    if (text === undefined) text = key;
    return text.replace(/\{(\d+)\}/g, (_, i) => String(args[Number(i)]));
  }

  function word(group, key) {
    const words = (window.I18N[lang] || {})[group] || {};
    return words[key] || String(key);
  }

  function applyStaticWords() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach((node) => {
      node.textContent = t(node.dataset.i18n);
    });
    byId("lang").textContent = t("other_language");
    document.title = (state ? state.site.name + " — " : "") + t("page_title");
  }

  // --- small helpers ------------------------------------------------------------------

  function byId(id) { return document.getElementById(id); }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("data-")) node.setAttribute(name, value);
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 120) return t("seconds", seconds);
    if (seconds < 7200) return t("minutes", Math.round(seconds / 60));
    if (seconds < 172800) return t("hours", (seconds / 3600).toFixed(1));
    return t("days", (seconds / 86400).toFixed(1));
  }

  function clockText(seconds) {
    const s = Math.abs(Math.round(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = String(s % 60).padStart(2, "0");
    if (h >= 48) return t("days", (s / 86400).toFixed(1));
    return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
  }

  function localTime(iso) {
    if (!iso) return "";
    const when = new Date(iso);
    if (isNaN(when)) return String(iso);
    return when.toLocaleString(lang === "zh" ? "zh-CN" : "en-GB", {
      month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
  }

  function showToast(text, bad) {
    const toast = byId("toast");
    toast.textContent = text;
    toast.className = bad ? "toast bad" : "toast";
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toast.hidden = true; }, 5000);
  }

  // --- fetching -----------------------------------------------------------------------

  async function refresh() {
    let response;
    try {
      response = await fetch("/api/state", { credentials: "same-origin", cache: "no-store" });
    } catch (err) {
      byId("banner").textContent = t("connection_lost");
      byId("banner").hidden = false;
      return;
    }
    byId("banner").hidden = true;
    if (response.status === 401) {
      const body = await response.json().catch(() => ({}));
      me = null;
      canLogin = !!body.can_login;
      drawSession();
      openLogin(null);
      return;
    }
    if (!response.ok) {
      byId("banner").textContent = t("connection_lost");
      byId("banner").hidden = false;
      return;
    }
    state = await response.json();
    fetchedAt = Date.now();
    me = state.me;
    canLogin = state.can_login;
    draw();
  }

  async function post(path, body) {
    const headers = { "Content-Type": "application/json" };
    if (me) headers["X-CSRF-Token"] = me.csrf;
    const response = await fetch(path, {
      method: "POST", credentials: "same-origin", headers, body: JSON.stringify(body || {}),
    });
    const answer = await response.json().catch(() => ({}));
    return { status: response.status, answer };
  }

  // --- drawing ------------------------------------------------------------------------

  function draw() {
    if (!state) return;
    byId("site-name").textContent = state.site.name;
    document.title = state.site.name + " — " + t("page_title");
    const health = state.health || {};
    const badge = byId("health");
    badge.textContent = t("health_" + (health.state || "OK"));
    badge.className = "badge " + (health.state === "OK" ? "ok" : "bad");
    badge.title = (health.reasons || []).join("; ");
    byId("updated").textContent = t("updated", new Date(state.ts * 1000).toLocaleTimeString(
      lang === "zh" ? "zh-CN" : "en-GB"));
    drawSession();
    drawAlarms();
    drawTickets();
    drawDevices();
    drawDelivery();
    tick();
  }

  function drawSession() {
    byId("me").textContent = me ? t("logged_in_as", me.login) : (canLogin ? "" : t("read_only"));
    byId("login-open").hidden = !!me || !canLogin;
    byId("logout").hidden = !me;
  }

  // Redraw a section only when what it shows changed: a button under the finger stays put.
  function changed(section, key) {
    const text = JSON.stringify(key) + lang + (me ? me.login : "") + canLogin;
    if (drawn[section] === text) return false;
    drawn[section] = text;
    return true;
  }

  function drawAlarms() {
    const alarms = state.alarms || [];
    byId("alarm-count").textContent = alarms.length ? `(${alarms.length})` : "";
    if (!changed("alarms", alarms)) return;
    const list = byId("alarm-list");
    list.replaceChildren();
    if (!alarms.length) list.append(el("p", { class: "empty", text: t("no_alarms") }));
    for (const alarm of alarms) {
      const place = [alarm.device_name, alarm.building].filter(Boolean).join(" · ");
      const card = el("article", { class: `card alarm sev-${alarm.severity}`, "data-alarm": alarm.alarm,
                                   "data-state": alarm.state },
        el("div", { class: "card-head" },
          el("span", { class: `sev sev-${alarm.severity}`, text: word("severity", alarm.severity) }),
          el("span", { class: "alarm-state", text: word("state", alarm.state) })),
        el("p", { class: "message", text: alarm.message || alarm.alarm }),
        el("p", { class: "muted small", text: place }),
        el("p", { class: "muted small" },
          t("raised_at", localTime(alarm.raised_at || alarm.last_change)),
          alarm.acknowledged_by ? " · " + t("acknowledged_by", alarm.acknowledged_by) : ""),
        el("p", { class: "muted small mono", text: alarm.alarm }));
      if (alarm.can_ack && canLogin) {
        const button = el("button", { type: "button", class: "ack", "data-ack": alarm.alarm,
                                      text: t("acknowledge") });
        button.addEventListener("click", () => {  // one click, one command
          button.disabled = true;
          acknowledge(alarm.alarm).finally(() => { button.disabled = false; });
        });
        card.append(button);
      }
      list.append(card);
    }
  }

  function drawTickets() {
    const tickets = state.tickets || [];
    byId("ticket-count").textContent = tickets.length ? `(${tickets.length})` : "";
    // the countdowns move every second on their own; redraw for anything else
    const key = tickets.map((tk) => ({ ...tk, due_in: null,
      clocks: tk.clocks.map((c) => ({ ...c, seconds_left: null })) }));
    const redraw = changed("tickets", key);
    const list = byId("ticket-list");
    if (redraw) list.replaceChildren();
    if (redraw && !tickets.length) list.append(el("p", { class: "empty", text: t("no_tickets") }));
    for (const ticket of tickets) {
      for (const clock of ticket.clocks) {
        clock.ends = clock.seconds_left === null ? null : fetchedAt / 1000 + clock.seconds_left;
      }
      if (!redraw) {
        const card = list.querySelector(`[data-ticket="${CSS.escape(ticket.ticket)}"]`);
        ticket.clocks.forEach((clock, i) => {
          const node = card && card.querySelectorAll(".countdown")[i];
          if (node) node.dataset.ends = clock.ends === null ? "" : String(clock.ends);
        });
        continue;
      }
      const card = el("article", { class: `card ticket prio-${ticket.priority}`, "data-ticket": ticket.ticket },
        el("div", { class: "card-head" },
          el("span", { class: `prio prio-${ticket.priority}`, text: word("priority", ticket.priority) }),
          el("span", { class: "ticket-state", text: word("ticket_state", ticket.state) })),
        el("p", { class: "message", text: ticket.title || ticket.fault }),
        el("p", { class: "muted small" }, ticket.device_name || "",
          ticket.owner ? " · " + t("owner", ticket.owner) : ""));
      const clocks = el("ul", { class: "clocks" });
      for (const clock of ticket.clocks) {
        clocks.append(el("li", { "data-clock": clock.clock },
          el("span", { text: word("clock", clock.clock) }),
          el("span", { class: "countdown", "data-ends": clock.ends === null ? "" : String(clock.ends),
                       "data-state": clock.state, "data-deadline": clock.deadline || "" })));
      }
      card.append(clocks, el("p", { class: "muted small mono", text: ticket.ticket }));
      list.append(card);
    }
  }

  // Countdowns run every second between polls, from the seconds the gateway said were left.
  function tick() {
    const now = Date.now() / 1000;
    document.querySelectorAll(".countdown").forEach((node) => {
      if (!node.dataset.ends) {
        node.textContent = node.dataset.state ? word("sla_state", node.dataset.state) : "";
        node.className = "countdown done";
        return;
      }
      const left = Number(node.dataset.ends) - now;
      node.textContent = left >= 0 ? t("left", clockText(left)) : t("overdue", clockText(left));
      node.className = "countdown " + (left < 0 ? "late" : left < 300 ? "soon" : "");
    });
  }

  function drawDevices() {
    const buildings = state.buildings || [];
    const shape = buildings.map((b) => [b.building, b.systems.map((s) => [s.system,
      s.devices.map((d) => [d.id, d.name, d.points.map((p) => p.point)])])]);
    const list = byId("device-list");
    if (changed("devices", shape)) {
      list.replaceChildren();
      if (!buildings.length) list.append(el("p", { class: "empty", text: t("no_devices") }));
      for (const building of buildings) {
        const systems = el("div", { class: "systems" });
        for (const system of building.systems) {
          const part = el("div", { class: "system", "data-system": system.system },
            el("h4", { text: word("system", system.system) }));
          for (const device of system.devices) part.append(deviceCard(device));
          systems.append(part);
        }
        list.append(el("div", { class: "building" },
          el("h3", { text: building.building || t("site_wide") }), systems));
      }
    }
    for (const building of buildings) {
      for (const system of building.systems) {
        for (const device of system.devices) fillDevice(device);
      }
    }
  }

  function deviceCard(device) {
    const where = [device.floor, device.room].filter(Boolean).join(" ");
    const card = el("article", { class: "card device", "data-device": device.id },
      el("div", { class: "card-head" },
        el("span", { class: "device-name", text: device.name }),
        el("span", { class: "online" })),
      el("p", { class: "muted small", text: [device.id, where].filter(Boolean).join(" · ") }));
    const table = el("dl", { class: "points" });
    for (const point of device.points) {
      table.append(el("div", { class: "point", "data-point": point.point },
        el("dt", { text: point.name }),
        el("dd", {}, el("span", { class: "value" }), " ", el("span", { class: "unit" }))));
    }
    card.append(table, el("p", { class: "muted small seen" }));
    return card;
  }

  function fillDevice(device) {
    const card = document.querySelector(`[data-device="${CSS.escape(device.id)}"]`);
    if (!card) return;
    const online = card.querySelector(".online");
    const mode = device.maintenance_until ? "maintenance"
      : device.online === true ? "online" : device.online === false ? "offline" : "unknown";
    online.textContent = t(mode);
    online.className = "online " + mode;
    card.dataset.online = mode;
    for (const point of device.points) {
      const row = card.querySelector(`[data-point="${CSS.escape(point.point)}"]`);
      if (!row) continue;
      const value = row.querySelector(".value");
      value.textContent = point.quality === "good" ? point.text : word("quality", point.quality);
      value.dataset.value = point.value === null ? "" : String(point.value);
      value.className = "value" + (point.quality === "good" ? "" : " bad");
      row.querySelector(".unit").textContent = point.quality === "good" ? point.unit : "";
    }
    const ages = device.points.map((p) => p.age);
    card.querySelector(".seen").textContent = ages.length ? t("age", duration(Math.min(...ages)))
      : (device.last_error || "");
  }

  function drawDelivery() {
    const list = byId("delivery-list");
    list.replaceChildren();
    const outbox = state.outbox || {};
    const health = state.health || {};
    const rows = [
      [t("committed"), outbox.committed_seq ?? ""],
      [t("size"), outbox.size_bytes !== undefined
        ? `${(outbox.size_bytes / 1048576).toFixed(1)} / ${(outbox.max_size / 1048576).toFixed(0)} MiB` : ""],
      [t("dropped"), outbox.dropped_readings ?? 0],
    ];
    if (state.disk) {
      rows.push([t("disk_free"), `${Math.round(100 * state.disk.free_bytes / state.disk.total_bytes)} %`]);
    }
    const box = el("article", { class: "card", "data-outbox": "" }, el("div", { class: "card-head" },
      el("span", { class: "device-name", text: t("outbox") })), table(rows));
    if ((health.reasons || []).length) {
      box.append(el("ul", { class: "reasons" }, ...health.reasons.map((r) => el("li", { text: r }))));
    }
    list.append(box);
    for (const sink of state.sinks || []) {
      const down = sink.last_error ? "bad" : "ok";
      list.append(el("article", { class: "card", "data-sink": sink.sink },
        el("div", { class: "card-head" },
          el("span", { class: "device-name", text: `${t("sink")}: ${sink.sink}` }),
          el("span", { class: `online ${down === "ok" ? "online" : "offline"}`,
                       text: down === "ok" ? "OK" : t("offline") })),
        table([
          [t("behind"), sink.behind],
          [t("last_success"), sink.last_success
            ? t("age", duration(state.ts - sink.last_success)) : t("never")],
          [t("down_for"), sink.down_for ? duration(sink.down_for) : t("none")],
          [t("last_error"), sink.last_error || t("none")],
        ])));
    }
  }

  function table(rows) {
    return el("dl", { class: "points" }, ...rows.map(([name, value]) =>
      el("div", { class: "point" }, el("dt", { text: name }), el("dd", { text: String(value) }))));
  }

  // --- acting -------------------------------------------------------------------------

  async function acknowledge(alarm) {
    if (!me) {
      openLogin(alarm);
      return;
    }
    const { status, answer } = await post(`/api/alarms/${encodeURIComponent(alarm)}/ack`, {});
    if (status === 401) {
      me = null;
      openLogin(alarm);
      return;
    }
    if (answer.ok) showToast(t("acknowledged", alarm), false);
    else showToast(t("ack_failed", answer.error || answer.message || status), true);
    await refresh();
  }

  function openLogin(alarm) {
    if (!canLogin) return;
    if (alarm) pendingAck = alarm;
    if (!byId("login-layer").hidden) return;  // already open: keep what is being typed
    byId("login-error").hidden = true;
    byId("login-layer").hidden = false;
    byId("login-password").value = "";
    byId("login-password").focus();
  }

  function closeLogin() {
    byId("login-layer").hidden = true;
    pendingAck = null;
  }

  async function submitLogin(event) {
    event.preventDefault();
    const { status, answer } = await post("/api/login", {
      login: byId("login-name").value, password: byId("login-password").value,
    });
    byId("login-password").value = "";
    if (status !== 200) {
      const error = byId("login-error");
      error.textContent = status === 429 ? t("too_many_attempts", Math.ceil(answer.retry_after || 1))
        : answer.error === "read_only" ? t("read_only") : t("wrong_password");
      error.hidden = false;
      return;
    }
    me = { login: answer.login, csrf: answer.csrf };
    const alarm = pendingAck;
    closeLogin();
    drawSession();
    if (alarm) await acknowledge(alarm);
    else await refresh();
  }

  async function logout() {
    await post("/api/logout", {});
    me = null;
    await refresh();
  }

  function switchLanguage() {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem("gateway.lang", lang);
    applyStaticWords();
    for (const key of Object.keys(drawn)) delete drawn[key];
    draw();
  }

  // --- start --------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    applyStaticWords();
    byId("lang").addEventListener("click", switchLanguage);
    byId("login-open").addEventListener("click", () => openLogin(null));
    byId("login-cancel").addEventListener("click", closeLogin);
    byId("login-form").addEventListener("submit", submitLogin);
    byId("logout").addEventListener("click", logout);
    refresh();
    setInterval(refresh, POLL_MS);
    setInterval(tick, TICK_MS);
  });
})();
