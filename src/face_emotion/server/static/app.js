/* face-emotion page: photo upload and webcam mode over the JSON API. No dependencies, no build step.
 * CSP-clean: no inline handlers; element positions are set through the CSSOM (element.style),
 * which a `style-src 'self'` policy allows, unlike style="" attributes. */
"use strict";

(function () {
  const FRAME_WIDTH = 320;         // webcam frames are sent this wide, as JPEG
  const FRAME_QUALITY = 0.7;
  // Two frames in flight: while the server analyses one, the next is captured, encoded and
  // uploaded (and a two-worker server analyses both at once). One at a time left the server idle
  // for the round trip of every frame.
  const FRAMES_IN_FLIGHT = 2;
  const MIN_FRAME_GAP_MS = 33;     // at most ~30 frames a second, however fast the server is
  const RETRY_MS = 500;            // after a network error
  const RATE_WINDOW = 30;          // frames/s is measured over the last this many frames shown

  const $ = (id) => document.getElementById(id);
  const main = $("main");
  const maxUploadBytes = parseFloat(main.dataset.maxUploadMb) * 1024 * 1024;

  const els = {
    modePhoto: $("mode-photo"), modeWebcam: $("mode-webcam"), modeVideo: $("mode-video"),
    photoPanel: $("photo-panel"), webcamPanel: $("webcam-panel"), videoPanel: $("video-panel"),
    form: $("upload-form"), dropZone: $("drop-zone"), fileInput: $("file-input"),
    predictButton: $("predict-button"), heatmapToggle: $("heatmap-toggle"),
    stage: $("stage"), preview: $("preview"), overlay: $("overlay"),
    status: $("status"), faces: $("faces"), faceList: $("face-list"),
    barsBlock: $("bars-block"), barsHeading: $("bars-heading"), bars: $("bars"),
    cameraStart: $("camera-start"), cameraStop: $("camera-stop"), video: $("video"),
    videoOverlay: $("video-overlay"), cameraLabel: $("camera-label"), cameraRate: $("camera-rate"),
    downloads: $("downloads"), downloadJson: $("download-json"), downloadCsv: $("download-csv"),
    deviceLocal: $("device-local"), deviceStatus: $("device-status"),
  };

  const state = { file: null, previewUrl: null, result: null, selected: 0, request: 0, controller: null,
                  device: "server" };

  function useDevice() { return state.device === "local"; }

  // ---------- messages ----------
  function say(text, kind) {
    els.status.textContent = text;
    els.status.classList.toggle("error", kind === "error");
  }

  function pct(p) { return (p * 100).toFixed(1) + "%"; }

  async function readError(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error;
    } catch (e) { /* not JSON */ }
    return { code: "http_" + response.status, message: "the server answered " + response.status };
  }

  function explainError(error) {
    switch (error.code) {
      case "invalid_image": return "This file is not an image we can read (" + error.message + ").";
      case "image_too_large":
      case "payload_too_large": return "This image is too large: " + error.message + ".";
      case "unsupported_media_type": return "This type of file is not supported: " + error.message;
      default: return "Something went wrong: " + error.message;
    }
  }

  // ---------- photo mode ----------
  function clearResult() {
    state.result = null;
    state.selected = 0;
    els.overlay.replaceChildren();
    els.faceList.replaceChildren();
    els.bars.replaceChildren();
    els.faces.hidden = true;
    els.barsBlock.hidden = true;
    els.downloads.hidden = true;
  }

  function chooseFile(file) {
    if (!file) return;
    state.request += 1;  // an answer still on its way belongs to the previous photo
    if (state.controller) state.controller.abort();
    state.controller = null;
    els.predictButton.textContent = "Predict";
    els.predictButton.removeAttribute("aria-busy");
    clearResult();
    state.file = file;
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = null;
    els.predictButton.disabled = false;
    if (file.size > maxUploadBytes) {
      els.stage.hidden = true;
      els.predictButton.disabled = true;
      say("This file is " + (file.size / 1048576).toFixed(1) + " MB; the limit is " +
          (maxUploadBytes / 1048576).toFixed(1) + " MB. Choose a smaller photo.", "error");
      return;
    }
    if (file.type && file.type.startsWith("image/")) {
      state.previewUrl = URL.createObjectURL(file);
      els.preview.src = state.previewUrl;
      els.preview.alt = "The chosen photo: " + file.name;
      els.stage.hidden = false;
    } else {
      els.stage.hidden = true;  // the server will say whether it can read it
    }
    say("Ready: " + file.name + ". Press Predict.");
  }

  // Every request takes a number (state.request, which chooseFile bumps too): an answer for an
  // earlier photo, or one overtaken by a newer request, is dropped, and choosing a photo aborts
  // what is still on its way. A Predict click is never ignored: it supersedes the request in flight.
  async function predictPhoto() {
    if (!state.file) return;
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    const request = ++state.request;
    const current = () => request === state.request;
    const file = state.file;
    els.predictButton.textContent = "Predicting…";
    els.predictButton.setAttribute("aria-busy", "true");
    say("Looking for faces…");
    // Heatmaps are a server feature: on this device the switch is hidden (style.css) and not asked for.
    const explain = !useDevice() && els.heatmapToggle.checked;
    let result = null;
    try {
      if (useDevice()) {
        result = await window.FaceLocal.analyseFile(file, { signal: controller.signal });
      } else {
        const body = new FormData();
        body.append("image", file, file.name || "image");
        const response = await fetch("/predict?explain=" + (explain ? "1" : "0"),
                                     { method: "POST", body: body, signal: controller.signal });
        if (!current()) return;
        if (!response.ok) {
          clearResult();
          say(explainError(await readError(response)), "error");
          return;
        }
        result = await response.json();
      }
    } catch (e) {
      if (!current()) return;
      clearResult();
      if (e && e.localError) say(e.message, "error");
      else if (useDevice()) say("The model could not run in this browser: " + ((e && e.message) || e), "error");
      else say("Could not reach the server. Check that it is running and try again.", "error");
      return;
    } finally {
      if (current()) {
        state.controller = null;
        els.predictButton.textContent = "Predict";
        els.predictButton.removeAttribute("aria-busy");
      }
    }
    if (!current()) return;
    result.path = file.name || null;
    showResult(result);
  }

  function showResult(result) {
    clearResult();
    state.result = result;
    const faces = result.faces || [];
    els.downloads.hidden = false;
    if (faces.length === 0) {
      say("No face found in this photo. Try a brighter, front-facing photo where the face is larger.");
      return;
    }
    const largest = faces[0];
    say((faces.length === 1 ? "1 face" : faces.length + " faces") + " found. Largest face: " +
        largest.emotion + " (" + pct(largest.confidence) + ").");
    const size = result.image;
    faces.forEach((face, index) => {
      els.overlay.appendChild(makeBox(face, index, size));
      if (face.heatmap_png) addHeatmap(face, size);
      els.faceList.appendChild(makeFaceItem(face, index));
    });
    els.faces.hidden = false;
    layoutLabels();
    updateHeatmapVisibility();
    selectFace(0, false);
  }

  function place(el, box, size) {
    el.style.left = (100 * box.x / size.width) + "%";
    el.style.top = (100 * box.y / size.height) + "%";
    el.style.width = (100 * box.width / size.width) + "%";
    el.style.height = (100 * box.height / size.height) + "%";
  }

  function makeBox(face, index, size) {
    // Mouse and touch target over the photo; keyboard and screen-reader users use the face list.
    const box = document.createElement("div");
    box.className = "face-box";
    box.dataset.index = String(index);
    box.setAttribute("aria-hidden", "true");
    place(box, face.box, size);
    const label = document.createElement("span");
    label.className = "face-label";
    label.dataset.full = (index + 1) + " " + face.emotion + " " + Math.round(face.confidence * 100) + "%";
    label.dataset.short = String(index + 1);  // the face list below has the rest
    label.textContent = label.dataset.full;
    box.appendChild(label);
    box.addEventListener("click", () => selectFace(index, false));
    return box;
  }

  // Labels go where they hide no other face or label (labels.js); run again whenever the photo
  // changes size (phones, rotation).
  function layoutLabels() {
    window.FaceLabels.layoutIn(els.overlay);
  }

  function makeFaceItem(face, index) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "face-item";
    button.dataset.index = String(index);
    button.setAttribute("aria-pressed", "false");
    button.textContent = "Face " + (index + 1) + (index === 0 ? " (largest)" : "") + ": " +
      face.emotion + ", " + pct(face.confidence);
    button.addEventListener("click", () => selectFace(index, true));
    li.appendChild(button);
    return li;
  }

  function selectFace(index, announce) {
    const faces = (state.result && state.result.faces) || [];
    const face = faces[index];
    if (!face) return;
    state.selected = index;
    els.overlay.querySelectorAll(".face-box").forEach((el) =>
      el.classList.toggle("selected", el.dataset.index === String(index)));
    els.faceList.querySelectorAll(".face-item").forEach((el) =>
      el.setAttribute("aria-pressed", el.dataset.index === String(index) ? "true" : "false"));
    els.barsHeading.textContent = "Probabilities for face " + (index + 1);
    const entries = Object.entries(face.probabilities).sort((a, b) => b[1] - a[1]);
    els.bars.replaceChildren(...entries.map(([name, p]) => makeBar(name, p, name === face.emotion)));
    els.barsBlock.hidden = false;
    if (announce) say("Face " + (index + 1) + ": " + face.emotion + " (" + pct(face.confidence) + ").");
  }

  function makeBar(name, probability, top) {
    const li = document.createElement("li");
    li.className = "bar" + (top ? " top" : "");
    const label = document.createElement("span");
    label.className = "bar-label";
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "bar-track";
    track.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = Math.max(0, Math.min(100, probability * 100)).toFixed(1) + "%";
    track.appendChild(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = pct(probability);
    li.append(label, track, value);
    return li;
  }

  // Heatmaps arrive as 8-bit PNGs (grey = attention). They are coloured here (dark blue -> red,
  // transparent where attention is low) so the face stays visible under them.
  function colour(v) {
    const t = v / 255;
    const r = Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * t - 3))));
    const g = Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * t - 2))));
    const b = Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * t - 1))));
    return [r, g, b, Math.round(60 + 150 * t)];
  }

  function addHeatmap(face, size) {
    const canvas = document.createElement("canvas");
    canvas.className = "heatmap";
    canvas.setAttribute("aria-hidden", "true");
    place(canvas, face.box, size);
    els.overlay.insertBefore(canvas, els.overlay.firstChild);
    const img = new Image();
    img.onload = () => {
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0);
      const data = ctx.getImageData(0, 0, canvas.width, canvas.height);
      const px = data.data;
      for (let i = 0; i < px.length; i += 4) {
        const grey = (px[i] + px[i + 1] + px[i + 2]) / 3;
        const c = colour(grey);
        px[i] = c[0]; px[i + 1] = c[1]; px[i + 2] = c[2]; px[i + 3] = c[3];
      }
      ctx.putImageData(data, 0, 0);
    };
    img.src = "data:image/png;base64," + face.heatmap_png;
  }

  function updateHeatmapVisibility() {
    els.stage.classList.toggle("show-heatmap", els.heatmapToggle.checked);
  }

  function onHeatmapToggle() {
    updateHeatmapVisibility();
    const faces = (state.result && state.result.faces) || [];
    const missing = faces.length > 0 && !faces[0].heatmap_png;
    if (els.heatmapToggle.checked && missing && state.file) {
      const keep = state.selected;
      predictPhoto().then(() => selectFace(Math.min(keep, ((state.result || {}).faces || []).length - 1), false));
    }
  }

  function downloadName(ext) {
    return window.FaceDownloads.stem(state.result && state.result.path, "photo") + "-emotions." + ext;
  }

  function downloadJson() {
    if (state.result) window.FaceDownloads.saveJson(state.result, downloadName("json"));
  }

  function downloadCsv() {
    if (!state.result) return;
    window.FaceDownloads.saveCsv(window.FaceDownloads.imageCsv(state.result, modelClasses(), state.result.path || ""),
                                 downloadName("csv"));
  }

  function modelClasses() {
    try { return JSON.parse(main.dataset.classes || "[]"); } catch (e) { return []; }
  }

  // ---------- webcam mode ----------
  // session: bumped by every start and stop, so answers to an earlier session's frames are dropped.
  const cam = { stream: null, timer: null, running: false, frame: document.createElement("canvas"),
                lastLabel: "", session: 0, inFlight: 0, sent: 0, shown: 0, lastSentAt: 0, shownAt: [],
                tracker: new window.FaceTracking.Tracker(window.FaceTracking.pageSettings()) };

  async function startCamera() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      els.cameraLabel.textContent = "This browser offers no camera here (the page must be on https or localhost).";
      return;
    }
    els.cameraStart.disabled = true;
    els.cameraLabel.textContent = "Starting the camera…";
    try {
      cam.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 } }, audio: false });
    } catch (e) {
      els.cameraStart.disabled = false;
      els.cameraLabel.textContent = e && e.name === "NotAllowedError"
        ? "Camera permission was denied. Allow the camera for this page and try again."
        : "No camera could be started (" + ((e && e.name) || "error") + ").";
      return;
    }
    els.video.srcObject = cam.stream;
    await els.video.play().catch(() => {});
    cam.running = true;
    watchFrames();
    cam.tracker.reset();
    cam.session += 1;
    cam.inFlight = 0;
    cam.sent = 0;
    cam.shown = 0;
    cam.shownAt = [];
    els.cameraStop.disabled = false;
    els.cameraLabel.textContent = "Camera on. Looking for faces…";
    if (useDevice()) localLoop(cam.session);
    else pump();
  }

  function restartCameraLoop() {
    cam.session += 1;
    clearTimeout(cam.timer);
    cam.inFlight = 0;
    cam.shownAt = [];
    if (useDevice()) localLoop(cam.session);
    else pump();
  }

  // The newest frame the video element has shown (requestVideoFrameCallback counts them), so the
  // local loop starts on a frame at once when one arrived while it was busy, instead of waiting
  // for the next (up to a frame interval lost per analysed frame).
  const frames = { shown: 0, waiting: [] };

  function watchFrames() {
    if (!els.video.requestVideoFrameCallback) return;
    const tick = () => {
      frames.shown += 1;
      frames.waiting.splice(0).forEach((resolve) => resolve());
      if (cam.running) els.video.requestVideoFrameCallback(tick);
    };
    els.video.requestVideoFrameCallback(tick);
  }

  function frameAfter(seen) {
    if (!els.video.requestVideoFrameCallback) return new Promise((resolve) => requestAnimationFrame(resolve));
    if (frames.shown > seen) return Promise.resolve();
    return new Promise((resolve) => frames.waiting.push(resolve));
  }

  // On this device: one frame at a time, straight from the video element (no JPEG, no upload).
  // Faces are looked for where they were in the last frame (a FaceFollower, ondevice.js), and in
  // the whole frame about once a second.
  // Stages as User Timing measures, "local:grab" (draw + read pixels), "local:detector-input"
  // (working copy or windows of it), "local:detector" (whole frame), "local:detector-roi" (windows
  // around the last faces), "local:detector-decode", "local:crops" (cut + transform),
  // "local:classifier" and "local:draw", which benchmarks/webcam_rate.py reads.
  async function localLoop(session) {
    let seen = frames.shown;
    const follower = window.FaceLocal.newFollower();
    while (cam.running && session === cam.session && useDevice()) {
      await frameAfter(seen);
      if (!cam.running || session !== cam.session) return;
      seen = frames.shown;
      if (!els.video.videoWidth) continue;
      try {
        const t0 = performance.now();
        const { result, grabMs } = await window.FaceLocal.analyseFrame(els.video, FRAME_WIDTH, follower);
        if (!cam.running || session !== cam.session) return;
        const t1 = performance.now();
        drawLive(result, t0 / 1000);
        const t2 = performance.now();
        localMeasure("grab", t0, grabMs);
        let at = t0 + grabMs;
        ["detector_input", "detector", "detector_roi", "detector_decode", "crops", "classifier"].forEach((name) => {
          const ms = result.stages_ms[name];
          if (typeof ms !== "number") return;
          localMeasure(name.replace(/_/g, "-"), at, ms);
          at += ms;
        });
        localMeasure("frame", t0, t1 - t0);
        localMeasure("draw", t1, t2 - t1);
        showRate(t2);
      } catch (e) {
        setCameraLabel((e && e.localError ? e.message : "The model could not run in this browser: " + e) + "");
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  }

  function localMeasure(name, start, ms) {
    if (!performance.measure) return;
    performance.measure("local:" + name, { start: start, duration: ms });
    if (performance.getEntriesByType("measure").length > 2000) performance.clearMeasures();
  }

  function stopCamera() {
    cam.running = false;
    cam.session += 1;
    frames.waiting.splice(0).forEach((resolve) => resolve());  // a waiting local loop sees the stop
    clearTimeout(cam.timer);
    if (cam.stream) cam.stream.getTracks().forEach((t) => t.stop());
    cam.stream = null;
    els.video.srcObject = null;
    const ctx = els.videoOverlay.getContext("2d");
    ctx.clearRect(0, 0, els.videoOverlay.width, els.videoOverlay.height);
    els.cameraStart.disabled = false;
    els.cameraStop.disabled = true;
    els.cameraLabel.textContent = "Camera off.";
    els.cameraRate.textContent = "";
    cam.lastLabel = "";
  }

  function grabFrame() {
    const v = els.video;
    if (!v.videoWidth) return Promise.resolve(null);
    const scale = Math.min(1, FRAME_WIDTH / v.videoWidth);
    cam.frame.width = Math.round(v.videoWidth * scale);
    cam.frame.height = Math.round(v.videoHeight * scale);
    cam.frame.getContext("2d").drawImage(v, 0, 0, cam.frame.width, cam.frame.height);
    return new Promise((resolve) => cam.frame.toBlob(resolve, "image/jpeg", FRAME_QUALITY));
  }

  // Where a frame's time goes, as User Timing measures ("webcam:capture+encode", "webcam:upload+server"
  // and the server's own part of it, "webcam:json", "webcam:draw") that the browser's performance
  // tools and benchmarks/webcam_rate.py read. Only recent ones are kept.
  function measure(name, start, end) {
    if (!performance.measure) return;
    performance.measure("webcam:" + name, { start: start, end: end });
    if (performance.getEntriesByType("measure").length > 2000) performance.clearMeasures();
  }

  // Keeps FRAMES_IN_FLIGHT frames on their way, at most one per MIN_FRAME_GAP_MS.
  function pump() {
    clearTimeout(cam.timer);
    if (!cam.running || useDevice() || cam.inFlight >= FRAMES_IN_FLIGHT) return;
    const wait = cam.lastSentAt + MIN_FRAME_GAP_MS - performance.now();
    if (wait > 0) {
      cam.timer = setTimeout(pump, wait);
      return;
    }
    cam.lastSentAt = performance.now();
    sendFrame(cam.session);
    pump();
  }

  async function sendFrame(session) {
    cam.inFlight += 1;
    const number = ++cam.sent;
    let retry = 0;
    try {
      const t0 = performance.now();  // when the frame was taken: the tracker's clock
      const blob = await grabFrame();
      if (!blob || session !== cam.session) return;
      const t1 = performance.now();
      const response = await fetch("/predict", {
        method: "POST", body: blob, headers: { "Content-Type": "image/jpeg" },
      });
      if (session !== cam.session) return;
      if (!response.ok) {
        setCameraLabel(explainError(await readError(response)));
        retry = RETRY_MS;  // a busy server (503) is not asked again at once
        return;
      }
      const t2 = performance.now();
      const result = await response.json();
      const t3 = performance.now();
      // Frames may come back out of order (two workers): an older answer never replaces a newer one.
      if (session !== cam.session || number < cam.shown) return;
      cam.shown = number;
      drawLive(result, t0 / 1000);
      const t4 = performance.now();
      measure("capture+encode", t0, t1);
      measure("upload+server", t1, t2);
      if (typeof result.elapsed_ms === "number") measure("server", Math.max(t1, t2 - result.elapsed_ms), t2);
      measure("json", t2, t3);
      measure("draw", t3, t4);
      showRate(t4);
    } catch (e) {
      if (session === cam.session) setCameraLabel("Could not reach the server; retrying…");
      retry = RETRY_MS;
    } finally {
      if (session === cam.session) {
        cam.inFlight -= 1;
        if (retry) cam.timer = setTimeout(pump, retry);
        else pump();
      }
    }
  }

  function showRate(now) {
    cam.shownAt.push(now);
    if (cam.shownAt.length > RATE_WINDOW) cam.shownAt.shift();
    const span = (now - cam.shownAt[0]) / 1000;
    if (cam.shownAt.length > 1 && span > 0) {
      els.cameraRate.textContent = ((cam.shownAt.length - 1) / span).toFixed(1) + " frames/s analysed";
    }
  }

  function setCameraLabel(text) {
    // Only changes are written, so a screen reader is not flooded five times a second.
    if (text !== cam.lastLabel) {
      cam.lastLabel = text;
      els.cameraLabel.textContent = text;
    }
  }

  function drawLive(result, takenS) {
    const canvas = els.videoOverlay;
    const w = els.video.clientWidth, h = els.video.clientHeight;
    const ratio = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    // Numbered tracks with smoothed labels (tracking.js): a face keeps its number from frame to frame.
    const faces = cam.tracker.update(result.faces || [], takenS);
    const drawn = window.FaceLabels.drawFaces(ctx, faces, w / result.image.width, h / result.image.height, w, h, true);
    // What was drawn, for scripts that check the overlay (a canvas has no DOM to query).
    canvas.dataset.boxes = JSON.stringify(drawn.rects.map((r) => [r.x, r.y, r.w, r.h].map(Math.round)));
    canvas.dataset.labels = JSON.stringify(drawn.labels);
    if (faces.length === 0) setCameraLabel("No face in view.");
    else setCameraLabel((faces.length === 1 ? "1 face" : faces.length + " faces") + ": " +
                        faces[0].emotion + " (" + Math.round(faces[0].confidence * 100) + "%).");
  }

  // ---------- on this device ----------
  // The switch (or ?device=local, or a static export, which has no server) runs the models in
  // this browser (local.js); video.js reads the choice from <html data-device>.
  const FILE_PAGE_HINT = "This page was opened as a file, and a browser does not let such a page load the " +
    "model files beside it. Serve the folder instead: in a terminal, in this folder, run " +
    "\u201cpython -m http.server 8000\u201d, then open localhost:8000 in this browser.";

  function setDeviceStatus(text, kind) {
    els.deviceStatus.textContent = text;
    els.deviceStatus.classList.toggle("error", kind === "error");
  }

  async function setDevice(local) {
    state.device = local ? "local" : "server";
    els.deviceLocal.checked = local;
    document.documentElement.dataset.device = state.device;
    if (cam.running) restartCameraLoop();
    if (!local) {
      setDeviceStatus("");
      return;
    }
    if (location.protocol === "file:") {
      // A browser does not let a page opened as a file fetch the files beside it (the model, the
      // runtime): the folder has to be served, by any static server.
      setDeviceStatus(FILE_PAGE_HINT, "error");
      return;
    }
    setDeviceStatus("Loading the model into this browser…");
    try {
      const loaded = await window.FaceLocal.load();
      if (state.device !== "local") return;
      setDeviceStatus("Running in this browser (" + loaded.threads + (loaded.threads === 1 ? " thread" : " threads") +
                      "): nothing is sent to the server.");
    } catch (e) {
      if (main.dataset.deviceOnly) {
        setDeviceStatus(e.message, "error");
        return;
      }
      state.device = "server";
      els.deviceLocal.checked = false;
      document.documentElement.dataset.device = "server";
      setDeviceStatus(e.message, "error");
      if (cam.running) restartCameraLoop();
    }
  }

  // ---------- modes ----------
  function setMode(mode) {
    [["photo", els.modePhoto, els.photoPanel], ["webcam", els.modeWebcam, els.webcamPanel],
     ["video", els.modeVideo, els.videoPanel]].forEach(([name, button, panel]) => {
      button.setAttribute("aria-pressed", name === mode ? "true" : "false");
      panel.hidden = name !== mode;
    });
    els.results.hidden = mode !== "photo";
    if (mode !== "webcam") stopCamera();
    // video.js pauses its clip when another mode is chosen.
    document.dispatchEvent(new CustomEvent("face-emotion:mode", { detail: { mode: mode } }));
  }

  // ---------- wiring ----------
  els.results = $("results");
  new ResizeObserver(layoutLabels).observe(els.overlay);
  els.preview.addEventListener("load", layoutLabels);
  els.modePhoto.addEventListener("click", () => setMode("photo"));
  els.modeWebcam.addEventListener("click", () => setMode("webcam"));
  els.modeVideo.addEventListener("click", () => setMode("video"));
  els.fileInput.addEventListener("change", () => chooseFile(els.fileInput.files[0]));
  els.form.addEventListener("submit", (event) => { event.preventDefault(); predictPhoto(); });
  els.heatmapToggle.addEventListener("change", onHeatmapToggle);
  els.downloadJson.addEventListener("click", downloadJson);
  els.downloadCsv.addEventListener("click", downloadCsv);
  els.cameraStart.addEventListener("click", startCamera);
  els.deviceLocal.addEventListener("change", () => setDevice(els.deviceLocal.checked));
  if (main.dataset.deviceOnly || new URLSearchParams(location.search).get("device") === "local") setDevice(true);
  else document.documentElement.dataset.device = "server";
  els.cameraStop.addEventListener("click", stopCamera);

  ["dragenter", "dragover"].forEach((type) => els.dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    els.dropZone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => els.dropZone.addEventListener(type, () =>
    els.dropZone.classList.remove("dragging")));
  els.dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) chooseFile(file);
  });
  // A photo dropped anywhere else must not make the browser navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  document.documentElement.classList.add("js");
})();
