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
      chans.channels.map((c) => [c.device_id, c.channel_id, c.name, c.online, c.status])]);
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
        btn.append(el("span", c.online ? "dot on" : "dot"), el("span", "name", name), el("span", "id", c.channel_id),
          el("span", "online", state));
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

  // ------------------------------------------------------------------ wiring
  // For tests and the console: window.gbPlayer.pc (getStats), .state, .firstFrameMs, .play(d, c, label), .stop().
  window.gbPlayer = Object.assign(player, { play, stop });
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
    listSignature = "";
    refreshList();
  });
  window.addEventListener("pagehide", () => {
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

  takeFragmentToken();
  $("forget").hidden = !token;
  setState("idle");
  refreshList();
  setInterval(() => {
    if (!document.hidden && $("token-form").hidden) refreshList();
  }, LIST_REFRESH_MS);
})();
