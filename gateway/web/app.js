// gb28181-gateway web page: the channel list from the REST API and a WHEP (WebRTC) player.
// Plain browser JavaScript, no build step, nothing loaded from elsewhere. See gateway/webpage.py.
"use strict";

(() => {
  const TOKEN_KEY = "gb28181-gateway.token";
  const LIST_REFRESH_MS = 10000;
  const STATS_MS = 1000;
  const ICE_GATHER_MS = 2000;
  const STALL_MS = 4000; // no new decoded frame for this long: "stalled"
  const DEAD_MS = 20000; // ... for this long: "failed"

  const $ = (id) => document.getElementById(id);
  const video = $("video");

  class HttpError extends Error {
    constructor(status, reason) {
      super(status ? `${status} ${reason}` : reason);
      this.status = status;
      this.reason = reason;
    }
  }
  class AuthNeeded extends HttpError {}

  // ------------------------------------------------------------------ token and requests
  let token = sessionStorage.getItem(TOKEN_KEY) || "";

  function takeFragmentToken() {
    // http://host:8080/#token=... : the fragment never reaches the server; keep it, then clear the address bar.
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!m) return;
    setToken(decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }

  function setToken(value) {
    token = value;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    $("forget").hidden = !token;
  }

  async function reasonOf(resp) {
    // The gateway's errors are JSON {"error": {"status", "reason"}}; anything else is shown as it is.
    let text = "";
    try {
      text = await resp.text();
      const body = JSON.parse(text);
      if (body && body.error && body.error.reason) return String(body.error.reason);
    } catch (e) {
      // not JSON
    }
    return (text.trim().slice(0, 300) || resp.statusText || "error");
  }

  async function request(method, path, options = {}) {
    const headers = Object.assign({}, options.headers || {});
    if (token) headers.Authorization = `Bearer ${token}`;
    let resp;
    try {
      resp = await fetch(path, {
        method, headers, body: options.body, keepalive: !!options.keepalive, cache: "no-store",
      });
    } catch (e) {
      throw new HttpError(0, `the gateway cannot be reached (${e.message})`);
    }
    if (resp.status === 401) {
      const reason = await reasonOf(resp);
      askToken(token ? "The gateway refused this token." : "");
      throw new AuthNeeded(401, reason);
    }
    if (!resp.ok) throw new HttpError(resp.status, await reasonOf(resp));
    return resp;
  }

  async function api(path) {
    return (await request("GET", path)).json();
  }

  function askToken(message) {
    const form = $("token-form");
    const msg = $("token-msg");
    msg.textContent = message;
    msg.hidden = !message;
    if (form.hidden) {
      form.hidden = false;
      $("token").focus();
    }
  }

  // ------------------------------------------------------------------ errors
  function showError(message) {
    console.error(message);
    $("error-text").textContent = message;
    $("error").hidden = false;
  }

  function listStatus(text, bad) {
    const el = $("list-status");
    el.textContent = text;
    el.classList.toggle("bad", !!bad);
  }

  // ------------------------------------------------------------------ channel list
  let listBusy = false;
  let listSignature = "";

  async function refreshList() {
    if (listBusy) return;
    listBusy = true;
    try {
      const [devs, chans] = await Promise.all([
        api("/api/v1/devices?limit=10000"),
        api("/api/v1/channels?kind=channel&limit=10000"),
      ]);
      renderList(devs, chans);
      startAlarms(); // the token is right: alarms too
      const shown = chans.channels.length < chans.total ? ` (first ${chans.channels.length} of ${chans.total})` : "";
      listStatus(`Updated ${new Date().toLocaleTimeString()}${shown}.`, false);
    } catch (e) {
      if (e instanceof AuthNeeded) listStatus("The gateway needs its bearer token to list channels.", true);
      else listStatus(`Could not load the channel list: ${e.message}`, true);
    } finally {
      listBusy = false;
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text; // never innerHTML: names come from the cameras
    return node;
  }

  function renderList(devs, chans) {
    const signature = JSON.stringify([devs.devices.map((d) => [d.device_id, d.name, d.online]),
      chans.channels.map((c) => [c.device_id, c.channel_id, c.name, c.online, c.status, c.position])]);
    const devices = new Map();
    for (const d of devs.devices) devices.set(d.device_id, { dev: d, channels: [] });
    for (const c of chans.channels) {
      if (!devices.has(c.device_id)) devices.set(c.device_id, { dev: null, channels: [] });
      devices.get(c.device_id).channels.push(c);
    }
    const devOnline = devs.devices.filter((d) => d.online).length;
    const chOnline = chans.channels.filter((c) => c.online).length;
    $("summary").textContent =
      `${devOnline}/${devs.total} devices, ${chOnline}/${chans.total} channels online`;
    if (signature === listSignature) return;
    listSignature = signature;

    const root = $("devices");
    root.replaceChildren();
    if (devices.size === 0) {
      root.append(el("p", "list-status", "No devices have registered yet."));
      return;
    }
    const ids = [...devices.keys()].sort();
    for (const id of ids) {
      const { dev, channels } = devices.get(id);
      const box = el("div", "device");
      box.dataset.deviceId = id;
      const head = el("div", "device-head");
      const online = dev ? dev.online : channels.some((c) => c.online);
      head.append(el("span", online ? "dot on" : "dot"), el("span", "device-name", (dev && dev.name) || "Device"),
        el("span", "id", id));
      head.title = `${(dev && dev.name) || "Device"} ${id}: ${online ? "online" : "offline"}`;
      box.append(head);
      if (channels.length === 0) {
        box.append(el("p", "list-status", "No video channels in its catalog."));
      }
      const ul = el("ul", "channel-list");
      channels.sort((a, b) => a.channel_id.localeCompare(b.channel_id));
      for (const c of channels) {
        const li = el("li");
        const btn = el("button", `channel ${c.online ? "on" : "off"}`);
        btn.type = "button";
        btn.dataset.device = c.device_id;
        btn.dataset.channel = c.channel_id;
        btn.dataset.online = String(c.online);
        const name = c.name || c.channel_id;
        const status = (c.status || "").toUpperCase();
        const state = c.online ? (status && status !== "ON" ? `online, ${status}` : "online") :
          (status && status !== "OFF" ? `offline, ${status}` : "offline");
        btn.append(el("span", c.online ? "dot on" : "dot"), el("span", "name", name), el("span", "id", c.channel_id));
        const pos = positionText(c.position);
        if (pos) {
          const span = el("span", "pos", pos);
          span.title = positionTitle(c.position);
          btn.append(span);
        }
        btn.append(el("span", "online", state));
        btn.title = `Play ${name} (${c.device_id}/${c.channel_id}): ${state}`;
        btn.addEventListener("click", () => play(c.device_id, c.channel_id, name));
        li.append(btn);
        ul.append(li);
      }
      box.append(ul);
      root.append(box);
    }
    markCurrent();
  }

  function positionText(p) {
    // "31.80012, 117.20034": latitude, longitude (degrees, WGS-84 as the device reports them).
    if (!p || typeof p.latitude !== "number" || typeof p.longitude !== "number") return "";
    return `${p.latitude.toFixed(5)}, ${p.longitude.toFixed(5)}`;
  }

  function positionTitle(p) {
    const parts = [`Position at ${p.time || "an unknown time"}`];
    if (typeof p.speed === "number") parts.push(`speed ${p.speed} km/h`);
    if (typeof p.direction === "number") parts.push(`direction ${p.direction}°`);
    if (p.received_at) parts.push(`received ${p.received_at}`);
    return parts.join(", ");
  }

  function markCurrent() {
    const key = player.key;
    for (const btn of document.querySelectorAll(".channel")) {
      btn.classList.toggle("current",
        !!key && btn.dataset.device === key.deviceId && btn.dataset.channel === key.channelId);
    }
  }

  // ------------------------------------------------------------------ player
  const player = {
    pc: null, // the RTCPeerConnection (tests read getStats() through window.gbPlayer.pc)
    session: null, // the WHEP session URL (Location), DELETEd on stop
    key: null, // {deviceId, channelId, sub}
    state: "idle",
    gen: 0, // bumped by every play/stop: late results of an older attempt are dropped
    startedAt: 0,
    firstFrameMs: null,
    statsTimer: null,
    lastFrames: 0,
    lastProgressAt: 0,
    lastBytes: null,
  };

  const STATE_LABELS = {
    idle: "idle", connecting: "connecting", playing: "playing", stalled: "stalled", failed: "failed",
    stopped: "stopped",
  };

  function setState(state, reason) {
    player.state = state;
    const badge = $("state");
    badge.textContent = STATE_LABELS[state] || state;
    badge.className = `state state-${state}`;
    badge.dataset.state = state;
    const r = $("reason");
    r.textContent = reason || "";
    r.hidden = !reason;
    $("stop").disabled = !(state === "connecting" || state === "playing" || state === "stalled");
    const ph = $("placeholder");
    ph.hidden = state === "playing" || state === "stalled";
    ph.textContent = state === "connecting" ? "Connecting…" : state === "failed" ? "Not playing." :
      "Pick a channel to play it.";
    video.controls = state === "playing" || state === "stalled"; // mute/fullscreen once there is a picture
  }

  function resetFacts() {
    for (const id of ["resolution", "codec", "fps", "bitrate", "frames", "ttff", "audio"]) $(id).textContent = "–";
  }

  function iceGathered(pc, ms) {
    // The gateway takes the offer whole (no trickle): wait for the host candidates, a short while at most.
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      let timer = null;
      const check = () => {
        if (pc.iceGatheringState !== "complete") return;
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      timer = setTimeout(() => {
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }, ms);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  async function play(deviceId, channelId, label) {
    await teardown();
    const gen = player.gen;
    const sub = $("substream").checked;
    player.key = { deviceId, channelId, sub, label };
    markCurrent();
    ptzShow();
    ptzMessage("");
    $("title").textContent = `${label}${sub ? " (sub-stream)" : ""}`;
    $("title").title = `${deviceId}/${channelId}${sub ? "?stream=sub" : ""}`;
    resetFacts();
    setState("connecting");
    if (matchMedia("(max-width: 799px)").matches) $("video").scrollIntoView({ block: "nearest" });
    if (typeof RTCPeerConnection === "undefined") {
      setState("failed", "This browser has no WebRTC (RTCPeerConnection).");
      return;
    }
    player.startedAt = performance.now();
    player.firstFrameMs = null;
    player.lastFrames = 0;
    player.lastProgressAt = performance.now();
    player.lastBytes = null;

    const pc = new RTCPeerConnection(); // no STUN/TURN: the gateway's answer carries its own addresses
    player.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    video.srcObject = stream;
    pc.ontrack = (ev) => {
      if (gen !== player.gen) return;
      stream.addTrack(ev.track);
      video.play().catch((e) => {
        if (gen === player.gen && e.name !== "AbortError") showError(`The browser did not start playback: ${e.message}`);
      });
    };
    pc.onconnectionstatechange = () => onConnectionState(pc, gen);
    watchFirstFrame(gen);

    const path = `/whep/${encodeURIComponent(deviceId)}/${encodeURIComponent(channelId)}${sub ? "?stream=sub" : ""}`;
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGathered(pc, ICE_GATHER_MS);
      if (gen !== player.gen) return;
      const resp = await request("POST", path, {
        body: pc.localDescription.sdp,
        headers: { "Content-Type": "application/sdp", Accept: "application/sdp" },
      });
      const location = resp.headers.get("Location");
      const answer = await resp.text();
      const session = location ? new URL(location, new URL(path, window.location.href)).href : null;
      if (gen !== player.gen) {
        if (session) deleteSession(session, false);
        return;
      }
      player.session = session;
      if (!session) showError("The gateway's WHEP answer has no Location header: the session cannot be ended.");
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      player.statsTimer = setInterval(() => pollStats(gen), STATS_MS);
    } catch (e) {
      if (gen !== player.gen) return;
      const reason = e instanceof AuthNeeded ? `The gateway needs its bearer token (${e.reason}).` :
        e instanceof HttpError ? `The gateway refused: ${e.message}` : `WebRTC error: ${e.message || e}`;
      await fail(reason);
    }
  }

  function firstFrame(gen) {
    if (gen !== player.gen || player.firstFrameMs !== null) return;
    player.firstFrameMs = Math.round(performance.now() - player.startedAt);
    $("ttff").textContent = `${player.firstFrameMs} ms`;
    setState("playing");
    updateResolution();
  }

  function watchFirstFrame(gen) {
    // The first frame painted (requestVideoFrameCallback) or, without it, loaded; getStats() backs both up
    // (a hidden tab paints nothing).
    const mark = () => firstFrame(gen);
    if (typeof video.requestVideoFrameCallback === "function") video.requestVideoFrameCallback(mark);
    else video.addEventListener("loadeddata", mark, { once: true });
  }

  function updateResolution() {
    if (video.videoWidth && video.videoHeight) $("resolution").textContent = `${video.videoWidth}×${video.videoHeight}`;
  }
  video.addEventListener("resize", updateResolution);

  function onConnectionState(pc, gen) {
    if (gen !== player.gen) return;
    const s = pc.connectionState;
    if (s === "failed") {
      fail("The WebRTC connection failed: no media path between this browser and the gateway (ICE/DTLS).");
    } else if (s === "closed") {
      fail("The gateway closed the WebRTC connection.");
    } else if (s === "disconnected" && player.state === "playing") {
      setState("stalled", "The connection was interrupted; waiting for it to recover.");
    }
  }

  function codecText(report, s) {
    const c = s && s.codecId ? report.get(s.codecId) : null;
    if (!c || !c.mimeType) return null;
    const name = c.mimeType.replace(/^(video|audio)\//i, "");
    if (s.kind === "audio" && c.clockRate) return `${name} ${c.clockRate / 1000} kHz`;
    return name;
  }

  function bitrateText(bps) {
    return bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`;
  }

  async function pollStats(gen) {
    const pc = player.pc;
    if (!pc || gen !== player.gen) return;
    let report;
    try {
      report = await pc.getStats();
    } catch (e) {
      return;
    }
    if (gen !== player.gen) return;
    let v = null;
    let a = null;
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      if (s.kind === "video") v = s;
      else if (s.kind === "audio") a = s;
    });
    const now = performance.now();
    if (v) {
      const frames = v.framesDecoded || 0;
      $("frames").textContent = v.framesDropped ? `${frames} decoded, ${v.framesDropped} dropped` : `${frames} decoded`;
      if (v.framesPerSecond !== undefined) $("fps").textContent = `${Math.round(v.framesPerSecond)} fps`;
      $("codec").textContent = codecText(report, v) || "–";
      if (player.lastBytes && v.timestamp > player.lastBytes.t) {
        const bps = (8 * (v.bytesReceived - player.lastBytes.b) * 1000) / (v.timestamp - player.lastBytes.t);
        $("bitrate").textContent = bitrateText(bps);
      }
      player.lastBytes = { b: v.bytesReceived || 0, t: v.timestamp };
      if (!video.videoWidth && v.frameWidth) $("resolution").textContent = `${v.frameWidth}×${v.frameHeight}`;
      if (frames > player.lastFrames) {
        player.lastFrames = frames;
        player.lastProgressAt = now;
        if (player.state === "connecting") firstFrame(gen);
        if (player.state === "stalled") setState("playing");
      }
    }
    if (a) $("audio").textContent = codecText(report, a) || "–";
    else if (pc.connectionState === "connected") $("audio").textContent = "none";
    updateResolution();
    const idle = now - player.lastProgressAt;
    if (player.state === "playing" && idle > STALL_MS) {
      setState("stalled", `No new video frame for ${Math.round(idle / 1000)} s.`);
    } else if (player.state === "connecting" && idle > DEAD_MS) {
      await fail(`No video ${Math.round(idle / 1000)} s after connecting (WebRTC: ${pc.connectionState}).`);
    } else if (player.state === "stalled" && idle > DEAD_MS) {
      await fail(`No new video frame for ${Math.round(idle / 1000)} s: the stream has ended or stopped.`);
    }
  }

  async function deleteSession(url, keepalive) {
    try {
      await request("DELETE", url, { keepalive });
    } catch (e) {
      if (e.status !== 404) showError(`Could not end the WHEP session: ${e.message}`);
    }
  }

  async function teardown() {
    player.gen += 1;
    clearInterval(player.statsTimer);
    player.statsTimer = null;
    const pc = player.pc;
    const session = player.session;
    player.pc = null;
    player.session = null;
    if (pc) {
      pc.ontrack = null;
      pc.onconnectionstatechange = null;
      pc.close();
    }
    video.srcObject = null;
    if (session) await deleteSession(session, false);
  }

  async function fail(reason) {
    await teardown();
    setState("failed", reason);
  }

  async function stop() {
    await teardown();
    setState("stopped");
  }

  // ------------------------------------------------------------------ PTZ pad
  // Move while a direction button is held (pointerdown), stop when it is released or left. Requests go out one
  // after the other, so a quick tap's stop never overtakes its move.
  const ptz = { queue: Promise.resolve(), moving: null };

  function ptzShow() {
    const key = player.key;
    $("ptz").hidden = !key;
    if (key) $("ptz").setAttribute("aria-label", `Pan, tilt and zoom of ${key.label}`);
  }

  function ptzMessage(text, bad) {
    const msg = $("ptz-msg");
    msg.textContent = text || "";
    msg.hidden = !text;
    msg.classList.toggle("bad", !!bad);
  }

  function ptzSpeed() {
    return Math.max(0, Math.min(255, parseInt($("ptz-speed").value, 10) || 0));
  }

  function ptzSend(body, what) {
    const key = player.key;
    if (!key) return Promise.resolve();
    const path = `/api/v1/channels/${encodeURIComponent(key.deviceId)}/${encodeURIComponent(key.channelId)}/ptz`;
    const run = async () => {
      try {
        await request("POST", path, { body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
        if (body.action !== "stop") ptzMessage("");
      } catch (e) {
        ptzMessage(e instanceof AuthNeeded ? "The gateway needs its bearer token." :
          `${what} failed: ${e.message}`, true);
      }
    };
    ptz.queue = ptz.queue.then(run, run);
    return ptz.queue;
  }

  function ptzStart(btn) {
    if (ptz.moving || !player.key) return;
    const speed = ptzSpeed();
    const body = { action: "move", pan: +(btn.dataset.pan || 0), tilt: +(btn.dataset.tilt || 0),
      zoom: +(btn.dataset.zoom || 0), speed };
    if (body.zoom) body.zoom_speed = speed >> 4; // zoom speed is 0..15
    ptz.moving = btn;
    btn.classList.add("pressed");
    ptzSend(body, btn.getAttribute("aria-label"));
  }

  function ptzStop(btn) {
    if (!ptz.moving || (btn && ptz.moving !== btn)) return;
    ptz.moving.classList.remove("pressed");
    ptz.moving = null;
    ptzSend({ action: "stop" }, "Stop");
  }

  for (const btn of document.querySelectorAll(".ptz-btn")) {
    btn.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0) return;
      ev.preventDefault(); // no focus ring or text selection on a long press
      ptzStart(btn);
    });
    for (const type of ["pointerup", "pointerleave", "pointercancel"]) {
      btn.addEventListener(type, () => ptzStop(btn));
    }
    btn.addEventListener("contextmenu", (ev) => ev.preventDefault()); // a long touch is a press, not a menu
    btn.addEventListener("keydown", (ev) => {
      if ((ev.key === " " || ev.key === "Enter") && !ev.repeat) {
        ev.preventDefault();
        ptzStart(btn);
      }
    });
    btn.addEventListener("keyup", (ev) => {
      if (ev.key === " " || ev.key === "Enter") ptzStop(btn);
    });
    btn.addEventListener("blur", () => ptzStop(btn));
  }
  $("ptz-speed").addEventListener("input", () => {
    $("ptz-speed-value").textContent = String(ptzSpeed());
  });
  $("ptz-preset-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const preset = parseInt($("ptz-preset").value, 10);
    if (!(preset >= 1 && preset <= 255)) {
      ptzMessage("A preset is a number from 1 to 255.", true);
      return;
    }
    ptzSend({ action: "preset_call", preset }, `Preset ${preset}`).then(() => {
      if ($("ptz-msg").hidden) ptzMessage(`Went to preset ${preset}.`);
    });
  });

  // ------------------------------------------------------------------ alarms
  // The newest alarms (GET /api/v1/alarms), then live from the SSE stream /api/v1/alarms/stream. EventSource
  // cannot send the Authorization header, so the stream is read with fetch() and parsed here; after a drop it
  // reconnects with Last-Event-ID and the gateway replays what was missed.
  const ALARM_ROWS = 200;
  const ALARM_FIRST = 50;
  const ALARM_STALE_MS = 45000; // the gateway sends a keepalive every 15 s: nothing for this long is a dead link
  const ALARM_RETRY_MAX_MS = 30000;
  const METHODS = { 1: "phone", 2: "device", 3: "SMS", 4: "GPS", 5: "video", 6: "fault", 7: "other" };
  const PRIORITIES = { 1: "highest", 2: "high", 3: "normal", 4: "low" };

  const alarms = {
    state: "off", // off, loading, connecting, live, reconnecting
    lastId: null, // the newest alarm id seen (Last-Event-ID)
    rows: new Map(), // id -> <li>
    retryMs: 2000, // from the stream's "retry:" field
    failures: 0,
    controller: null,
    timer: null,
    gen: 0,
    connects: 0,
    unseen: 0,
    visible: false,
  };

  function alarmStatus(state, text) {
    alarms.state = state;
    const s = $("alarm-status");
    s.dataset.state = state;
    s.textContent = text;
    s.classList.toggle("bad", state === "reconnecting" || state === "off-error");
  }

  function setUnseen(n) {
    alarms.unseen = n;
    const badge = $("alarm-unseen");
    badge.textContent = String(n);
    badge.hidden = n === 0;
  }

  function timeText(epoch) {
    const d = new Date(epoch * 1000);
    if (Number.isNaN(d.getTime())) return "?";
    return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function alarmRow(a) {
    const prio = Number(a.priority);
    const li = el("li", `alarm prio-${[1, 2, 3, 4].includes(prio) ? prio : 0}`);
    li.dataset.id = String(a.id);
    const head = el("div", "alarm-head");
    const p = el("span", "prio", `P${a.priority}`);
    p.title = `Priority ${a.priority}${PRIORITIES[prio] ? ` (${PRIORITIES[prio]})` : ""}`;
    const method = METHODS[a.method] || `method ${a.method}`;
    const when = el("time", "when", timeText(a.received_at));
    when.dateTime = new Date(a.received_at * 1000).toISOString();
    head.append(p, el("span", "method", method), when);
    const desc = el("div", "desc", a.description || "(no description)");
    const src = el("div", "src id", a.channel_id && a.channel_id !== a.device_id ?
      `${a.device_id}/${a.channel_id}` : String(a.device_id));
    li.append(head, desc, src);
    const facts = [`Alarm ${a.id}: priority ${a.priority}, ${method} alarm`];
    if (a.alarm_type !== null && a.alarm_type !== undefined && a.alarm_type !== "") facts.push(`type ${a.alarm_type}`);
    if (a.alarm_time) facts.push(`device time ${a.alarm_time}`);
    if (typeof a.longitude === "number" && typeof a.latitude === "number") {
      facts.push(`at ${a.latitude.toFixed(5)}, ${a.longitude.toFixed(5)}`);
    }
    if (a.sip_method) facts.push(`by ${a.sip_method}`);
    li.title = facts.join(", ");
    return li;
  }

  function addAlarm(a, live) {
    const id = Number(a && a.id);
    if (!Number.isFinite(id) || alarms.rows.has(id)) return false;
    if (alarms.lastId === null || id > alarms.lastId) alarms.lastId = id;
    const list = $("alarm-list");
    // Newest (highest id) first.
    let before = list.firstElementChild;
    while (before && Number(before.dataset.id) > id) before = before.nextElementSibling;
    if (!before && list.childElementCount >= ALARM_ROWS) return false; // older than everything kept
    const li = alarmRow(a);
    if (live) li.classList.add("new");
    list.insertBefore(li, before);
    alarms.rows.set(id, li);
    while (list.childElementCount > ALARM_ROWS) {
      const last = list.lastElementChild;
      alarms.rows.delete(Number(last.dataset.id));
      last.remove();
    }
    $("alarm-empty").hidden = true;
    if (live && !(alarms.visible && !document.hidden)) setUnseen(alarms.unseen + 1);
    return true;
  }

  async function loadAlarms() {
    const body = await api(`/api/v1/alarms?limit=${ALARM_FIRST}`);
    for (const a of body.alarms || []) addAlarm(a, false);
  }

  function startAlarms() {
    // Once the API answers (the token is right): the list, then the stream. Idempotent.
    if (alarms.state !== "off") return;
    alarms.gen += 1;
    const gen = alarms.gen;
    alarmStatus("loading", "loading…");
    loadAlarms().then(() => {
      if (gen !== alarms.gen) return;
      if (alarms.lastId === null) alarms.lastId = 0; // replay anything raised between the list and the stream
      connectAlarms(gen);
    }, (e) => {
      if (gen !== alarms.gen) return;
      if (e instanceof AuthNeeded) {
        stopAlarms("needs the token");
        return;
      }
      alarmStatus("reconnecting", `Could not load the alarms: ${e.message}`);
      scheduleAlarms(gen, () => {
        alarms.state = "off";
        startAlarms();
      });
    });
  }

  function stopAlarms(text) {
    alarms.gen += 1;
    clearTimeout(alarms.timer);
    alarms.timer = null;
    if (alarms.controller) alarms.controller.abort();
    alarms.controller = null;
    alarmStatus("off", text || "not connected");
  }

  function clearAlarms() {
    $("alarm-list").replaceChildren();
    alarms.rows.clear();
    alarms.lastId = null;
    $("alarm-empty").hidden = false;
    $("alarm-gap").hidden = true;
    setUnseen(0);
  }

  function scheduleAlarms(gen, fn) {
    // 2 s (or the stream's retry:) after a drop, doubling while the gateway cannot be reached.
    const delay = Math.min(ALARM_RETRY_MAX_MS, alarms.retryMs * 2 ** Math.min(alarms.failures, 4));
    alarms.failures += 1;
    clearTimeout(alarms.timer);
    alarms.timer = setTimeout(() => {
      if (gen === alarms.gen) fn();
    }, delay);
    return delay;
  }

  async function connectAlarms(gen) {
    const controller = new AbortController();
    alarms.controller = controller;
    alarms.connects += 1;
    alarmStatus(alarms.connects > 1 ? "reconnecting" : "connecting", "connecting…");
    let watchdog = null;
    const kick = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), ALARM_STALE_MS);
    };
    let why = "the stream ended";
    try {
      const headers = { Accept: "text/event-stream" };
      if (token) headers.Authorization = `Bearer ${token}`;
      if (alarms.lastId !== null) headers["Last-Event-ID"] = String(alarms.lastId);
      kick();
      let resp;
      try {
        resp = await fetch("/api/v1/alarms/stream", { headers, cache: "no-store", signal: controller.signal });
      } catch (e) {
        throw new HttpError(0, `the gateway cannot be reached (${e.message})`);
      }
      if (resp.status === 401) {
        askToken(token ? "The gateway refused this token." : "");
        throw new AuthNeeded(401, await reasonOf(resp));
      }
      if (!resp.ok) throw new HttpError(resp.status, await reasonOf(resp));
      if (gen !== alarms.gen) return;
      alarms.failures = 0;
      alarmStatus("live", "live");
      await readEvents(resp.body, kick, (ev) => {
        if (gen === alarms.gen) onAlarmEvent(ev);
      });
    } catch (e) {
      if (e instanceof AuthNeeded) {
        if (gen === alarms.gen) stopAlarms("needs the token");
        return;
      }
      why = e instanceof HttpError ? e.message : controller.signal.aborted ? "the stream was cut" :
        `the stream broke (${e.message || e})`;
    } finally {
      clearTimeout(watchdog);
      if (alarms.controller === controller) alarms.controller = null;
    }
    if (gen !== alarms.gen) return;
    alarmStatus("reconnecting", `${why}; reconnecting…`);
    const delay = scheduleAlarms(gen, () => connectAlarms(gen));
    alarmStatus("reconnecting", `${why}; reconnecting in ${Math.round(delay / 1000)} s`);
  }

  async function readEvents(body, onChunk, dispatch) {
    // text/event-stream (the HTML standard's parser): fields id/event/data/retry, a blank line ends an event,
    // lines starting with ":" are comments; CR, LF or CRLF end a line.
    const reader = body.getReader();
    const decoder = new TextDecoder("utf-8");
    let buf = "";
    let ev = { id: null, event: "", data: [] };
    const line = (text) => {
      if (text === "") {
        if (ev.data.length) dispatch({ id: ev.id, event: ev.event || "message", data: ev.data.join("\n") });
        ev = { id: null, event: "", data: [] };
        return;
      }
      if (text[0] === ":") return;
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "data") ev.data.push(value);
      else if (field === "event") ev.event = value;
      else if (field === "id" && !value.includes("\0")) ev.id = value;
      else if (field === "retry" && /^\d+$/.test(value)) alarms.retryMs = Math.max(500, parseInt(value, 10));
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      onChunk();
      buf += decoder.decode(value, { stream: true });
      let start = 0;
      for (;;) {
        const cr = buf.indexOf("\r", start);
        const lf = buf.indexOf("\n", start);
        if (cr < 0 && lf < 0) break;
        const end = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
        if (buf[end] === "\r" && end === buf.length - 1) break; // maybe CRLF split across chunks: wait
        line(buf.slice(start, end));
        start = end + (buf[end] === "\r" && buf[end + 1] === "\n" ? 2 : 1);
      }
      buf = buf.slice(start);
    }
  }

  function onAlarmEvent(ev) {
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch (e) {
      console.warn("alarm stream: data is not JSON", ev.data);
      return;
    }
    if (ev.event === "alarm") {
      if (ev.id !== null && /^\d+$/.test(ev.id) && (alarms.lastId === null || +ev.id > alarms.lastId)) {
        alarms.lastId = +ev.id;
      }
      addAlarm(data, true);
    } else if (ev.event === "gap") {
      const n = Number(data.skipped) || 0;
      $("alarm-gap-text").textContent = `${n} alarm${n === 1 ? "" : "s"} not shown (missed while disconnected).`;
      $("alarm-gap").hidden = false;
      loadAlarms().catch((e) => console.warn(`alarm list reload failed: ${e.message}`));
    }
  }

  function watchAlarmPanel() {
    const panel = $("alarms");
    const seen = () => {
      if (alarms.visible && !document.hidden) {
        setUnseen(0);
      }
    };
    if (typeof IntersectionObserver === "function") {
      new IntersectionObserver((entries) => {
        alarms.visible = entries.some((e) => e.isIntersecting);
        seen();
      }).observe(panel);
    } else {
      alarms.visible = true;
    }
    document.addEventListener("visibilitychange", seen);
    $("alarms-link").addEventListener("click", () => setUnseen(0));
    $("alarm-gap-close").addEventListener("click", () => {
      $("alarm-gap").hidden = true;
    });
  }

  // ------------------------------------------------------------------ wiring
  // For tests and the console: window.gbPlayer.pc (getStats), .state, .firstFrameMs, .play(d, c, label), .stop().
  window.gbPlayer = Object.assign(player, { play, stop });
  // For tests: window.gbAlarms.state, .lastId, .connects; .drop() cuts the stream as a network drop would.
  window.gbAlarms = Object.assign(alarms, {
    drop: () => {
      if (alarms.controller) alarms.controller.abort();
    },
  });
  $("stop").addEventListener("click", () => stop());
  $("refresh").addEventListener("click", () => {
    listSignature = "";
    refreshList();
  });
  $("error-close").addEventListener("click", () => {
    $("error").hidden = true;
  });
  $("substream").addEventListener("change", () => {
    const key = player.key;
    if (key && (player.state === "connecting" || player.state === "playing" || player.state === "stalled")) {
      play(key.deviceId, key.channelId, key.label);
    }
  });
  $("forget").addEventListener("click", async () => {
    setToken("");
    stopAlarms();
    clearAlarms();
    await stop();
    listSignature = "";
    $("devices").replaceChildren();
    refreshList();
  });
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("token");
    const value = input.value.trim();
    if (!value) return;
    setToken(value);
    input.value = "";
    $("token-form").hidden = true;
    if (alarms.state === "off") clearAlarms(); // another token may show other alarms
    listSignature = "";
    refreshList();
  });
  window.addEventListener("pagehide", () => {
    stopAlarms("the page was left");
    // Leaving the page: end the WHEP session now (keepalive lets the request outlive the page).
    const session = player.session;
    player.session = null;
    if (session) {
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      fetch(session, { method: "DELETE", headers, keepalive: true }).catch(() => {});
    }
    if (player.pc) {
      teardown(); // no session left to DELETE; closes the connection
      setState("stopped", "The page was left; pick the channel again.");
    }
  });
  window.addEventListener("unhandledrejection", (ev) => {
    showError(`Unexpected error: ${ev.reason && ev.reason.message ? ev.reason.message : ev.reason}`);
  });

  watchAlarmPanel();
  takeFragmentToken();
  $("forget").hidden = !token;
  setState("idle");
  refreshList();
  setInterval(() => {
    if (!document.hidden && $("token-form").hidden) refreshList();
  }, LIST_REFRESH_MS);
})();
