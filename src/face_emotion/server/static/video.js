/* face-emotion page, Video mode: send a clip to POST /predict/video, then play it with each
 * face's box, number and label in sync, a timeline of the probabilities, and a summary per face.
 * No dependencies (the timeline is drawn on a canvas here). Needs tracking.js (colours). */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const panel = $("video-panel");
  if (!panel) return;
  const els = {
    form: $("clip-form"), input: $("clip-input"), button: $("clip-button"), status: $("clip-status"),
    stage: $("clip-stage"), video: $("clip"), overlay: $("clip-overlay"), results: $("clip-results"),
    timeline: $("timeline"), timelineTracks: $("timeline-tracks"), legend: $("timeline-legend"),
    table: $("track-table"), drop: $("clip-drop"),
    downloadJson: $("clip-download-json"), downloadCsv: $("clip-download-csv"),
    downloadVideo: $("clip-download-video"), downloadStatus: $("clip-download-status"),
  };
  const maxBytes = parseFloat(panel.dataset.maxVideoMb) * 1024 * 1024;
  // One colour per emotion on the timeline (a colour-blind-safe qualitative palette).
  const CLASS_COLOURS = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb",
                         "#000000", "#ee7733", "#009988"];
  const state = { file: null, url: null, analysis: null, selected: null, busy: false, recording: false };

  function say(text, kind) {
    els.status.textContent = text;
    els.status.classList.toggle("error", kind === "error");
  }

  function pct(p) { return Math.round(p * 100) + "%"; }

  function clearResults() {
    state.analysis = null;
    state.selected = null;
    els.overlay.replaceChildren();
    els.results.hidden = true;
    els.timelineTracks.replaceChildren();
    els.legend.replaceChildren();
    els.table.tBodies[0].replaceChildren();
  }

  function chooseFile(file) {
    if (!file) return;
    clearResults();
    state.file = file;
    if (state.url) URL.revokeObjectURL(state.url);
    state.url = null;
    if (file.size > maxBytes) {
      els.stage.hidden = true;
      els.button.disabled = true;
      say("This clip is " + (file.size / 1048576).toFixed(1) + " MB; the limit is " +
          (maxBytes / 1048576).toFixed(0) + " MB. Choose a shorter or smaller clip.", "error");
      return;
    }
    state.url = URL.createObjectURL(file);
    els.video.src = state.url;
    els.video.setAttribute("aria-label", "The chosen clip: " + file.name);
    els.stage.hidden = false;
    els.button.disabled = false;
    say("Ready: " + file.name + ". Press Analyse.");
  }

  async function readError(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error;
    } catch (e) { /* not JSON */ }
    return { code: "http_" + response.status, message: "the server answered " + response.status };
  }

  function onDevice() {
    return document.documentElement.dataset.device === "local";
  }

  async function analyse() {
    if (!state.file || state.busy) return;
    state.busy = true;
    const file = state.file;
    els.button.disabled = true;
    els.button.textContent = "Analysing…";
    try {
      if (onDevice()) {
        // On this device (local.js): the clip is played and analysed here; nothing is uploaded.
        say("Analysing the clip in this browser…");
        const analysis = await window.FaceLocal.analyseClip(state.url, {
          file: file, onProgress: (done) => say("Analysing the clip in this browser… " + pct(done)),
        });
        if (file === state.file) show(analysis);
        return;
      }
      say("Analysing the clip… (this takes about as long as the clip itself)");
      const body = new FormData();
      body.append("video", file, file.name || "clip");
      let response;
      try {
        response = await fetch("/predict/video", { method: "POST", body: body });
      } catch (e) {
        if (file !== state.file) return;
        clearResults();
        say("Could not reach the server. Check that it is running and try again.", "error");
        return;
      }
      if (file !== state.file) return;
      if (!response.ok) {
        clearResults();
        const error = await readError(response);
        say("This clip could not be analysed: " + error.message, "error");
        return;
      }
      show(await response.json());
    } catch (e) {
      if (file !== state.file) return;
      clearResults();
      if (!(e && e.localError)) throw e;  // a fault in this page: let it show as one
      say(e.message, "error");
    } finally {
      state.busy = false;
      els.button.disabled = !state.file;
      els.button.textContent = "Analyse";
    }
  }

  /* The server numbers a face from its second analysed frame on (its first has track_id null), which
   * showed grey, unnumbered boxes on the first frame. Such a face takes the number of the face it
   * overlaps most in the next frame, walking back from the end so a number reaches every frame. */
  function numberFirstFrames(frames) {
    const overlap = window.FaceTracking.iou;
    for (let i = frames.length - 2; i >= 0; i--) {
      const taken = new Set(frames[i].faces.filter((f) => f.track_id !== null).map((f) => f.track_id));
      frames[i].faces.forEach((face) => {
        if (face.track_id !== null) return;
        let best = null, bestIou = 0.3;
        frames[i + 1].faces.forEach((next) => {
          const value = overlap(face.box, next.box);
          if (next.track_id !== null && !taken.has(next.track_id) && value >= bestIou) { best = next; bestIou = value; }
        });
        if (best) { face.track_id = best.track_id; taken.add(best.track_id); }
      });
    }
    return frames;
  }

  function show(analysis) {
    clearResults();
    numberFirstFrames(analysis.frames);
    state.analysis = analysis;
    const summary = analysis.summary;
    const tracks = summary.tracks;
    if (tracks.length === 0) {
      say("No face found in " + summary.frames_analysed + " analysed frames. Try a clip where faces are " +
          "larger and facing the camera.");
      return;
    }
    say((tracks.length === 1 ? "1 face" : tracks.length + " faces") + " tracked over " +
        summary.duration_s.toFixed(1) + " s. Mostly " + summary.dominant_emotion + ". Press play.");
    state.selected = tracks[0].track_id;
    renderTable(tracks);
    renderTrackButtons(tracks);
    renderLegend(analysis.classes);
    els.results.hidden = false;
    drawTimeline();
    drawAt(els.video.currentTime);
  }

  // ---------- boxes in sync with the clip ----------
  function frameIndexAt(frames, t) {
    let lo = 0, hi = frames.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (frames[mid].time_s <= t + 1e-3) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    return found;
  }

  /* The faces to show at time t: the analysed frame at or before t, with each box moved part of
   * the way to the same face's box in the next analysed frame, so boxes glide between samples. */
  function facesAt(t) {
    const frames = state.analysis.frames;
    const i = frameIndexAt(frames, t);
    if (i < 0) return [];
    const before = frames[i], after = frames[i + 1];
    const gap = after ? after.time_s - before.time_s : 1 / Math.max(state.analysis.sample_fps, 0.1);
    if (t - before.time_s > 1.5 * gap) return [];  // past the last analysed frame
    return before.faces.map((face) => {
      const next = after && face.track_id !== null && after.faces.find((f) => f.track_id === face.track_id);
      if (!next || gap <= 0) return face;
      const k = Math.min(1, Math.max(0, (t - before.time_s) / gap));
      const b = face.box, n = next.box;
      return Object.assign({}, face, { box: { x: b.x + k * (n.x - b.x), y: b.y + k * (n.y - b.y),
        width: b.width + k * (n.width - b.width), height: b.height + k * (n.height - b.height) } });
    });
  }

  function labelText(face) {
    return (face.track_id === null ? "" : face.track_id + " ") + face.emotion + " " + pct(face.confidence);
  }

  function drawAt(t) {
    if (!state.analysis) return;
    const size = state.analysis.summary.video;
    const boxes = facesAt(t).map((face) => {
      const box = document.createElement("div");
      box.className = "face-box clip-box";
      box.dataset.track = face.track_id === null ? "" : String(face.track_id);
      box.style.left = (100 * face.box.x / size.width) + "%";
      box.style.top = (100 * face.box.y / size.height) + "%";
      box.style.width = (100 * face.box.width / size.width) + "%";
      box.style.height = (100 * face.box.height / size.height) + "%";
      box.style.borderColor = window.FaceTracking.trackColour(face.track_id);
      const label = document.createElement("span");
      label.className = "face-label";
      label.dataset.full = labelText(face);
      label.dataset.short = face.track_id === null ? "" : String(face.track_id);
      label.textContent = label.dataset.full;
      box.appendChild(label);
      return box;
    });
    els.overlay.replaceChildren(...boxes);
    // Neighbouring faces' labels must not cover each other (labels.js, the photo's rule).
    window.FaceLabels.layoutIn(els.overlay);
    els.overlay.dataset.time = t.toFixed(3);
    drawTimeline();
  }

  function onFrame(now, metadata) {
    drawAt(metadata.mediaTime);
    els.video.requestVideoFrameCallback(onFrame);
  }

  // ---------- timeline ----------
  function renderTrackButtons(tracks) {
    els.timelineTracks.replaceChildren(...tracks.map((track) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "track-button";
      button.dataset.track = String(track.track_id);
      button.textContent = "Face " + track.track_id;
      button.setAttribute("aria-pressed", track.track_id === state.selected ? "true" : "false");
      button.addEventListener("click", () => selectTrack(track.track_id));
      return button;
    }));
  }

  function selectTrack(id) {
    state.selected = id;
    els.timelineTracks.querySelectorAll(".track-button").forEach((b) =>
      b.setAttribute("aria-pressed", b.dataset.track === String(id) ? "true" : "false"));
    drawTimeline();
  }

  function renderLegend(classes) {
    els.legend.replaceChildren(...classes.map((name, i) => {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = CLASS_COLOURS[i % CLASS_COLOURS.length];
      li.append(swatch, document.createTextNode(name));
      return li;
    }));
  }

  function drawTimeline() {
    const analysis = state.analysis;
    if (!analysis || state.selected === null) return;
    const canvas = els.timeline;
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600, h = canvas.clientHeight || 180;
    if (canvas.width !== Math.round(w * ratio)) canvas.width = Math.round(w * ratio);
    if (canvas.height !== Math.round(h * ratio)) canvas.height = Math.round(h * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const left = 34, right = 8, top = 8, bottom = 22;
    const duration = Math.max(analysis.summary.duration_s, els.video.duration || 0, 0.001);
    const x = (t) => left + (w - left - right) * t / duration;
    const y = (p) => top + (h - top - bottom) * (1 - p);
    ctx.strokeStyle = "#d0d7de";
    ctx.fillStyle = "#57606a";
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    [0, 0.5, 1].forEach((p) => {
      ctx.beginPath(); ctx.moveTo(left, y(p)); ctx.lineTo(w - right, y(p)); ctx.stroke();
      ctx.fillText(pct(p), 2, y(p) + 4);
    });
    const step = duration > 20 ? 10 : duration > 8 ? 2 : 1;
    for (let t = 0; t <= duration + 1e-6; t += step) {
      if (x(t) < w - 24) ctx.fillText(t.toFixed(0) + " s", x(t) - 6, h - 6);
    }
    analysis.classes.forEach((name, ci) => {
      ctx.strokeStyle = CLASS_COLOURS[ci % CLASS_COLOURS.length];
      ctx.lineWidth = 2;
      ctx.beginPath();
      let pen = false;
      analysis.frames.forEach((frame) => {
        const face = frame.faces.find((f) => f.track_id === state.selected);
        if (!face) { pen = false; return; }
        const px = x(frame.time_s), py = y(face.probabilities[name]);
        if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
        pen = true;
      });
      ctx.stroke();
    });
    const now = x(els.video.currentTime || 0);
    ctx.strokeStyle = "#1b1f24";
    ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.moveTo(now, top); ctx.lineTo(now, h - bottom); ctx.stroke();
    canvas.setAttribute("aria-label", "Probabilities of each emotion over time for face " + state.selected);
  }

  function seekFromTimeline(event) {
    if (!state.analysis) return;
    const rect = els.timeline.getBoundingClientRect();
    const duration = Math.max(state.analysis.summary.duration_s, els.video.duration || 0);
    const fraction = (event.clientX - rect.left - 34) / Math.max(1, rect.width - 42);
    els.video.currentTime = Math.max(0, Math.min(duration, fraction * duration));
  }

  // ---------- per-track summary ----------
  function renderTable(tracks) {
    const body = els.table.tBodies[0];
    body.replaceChildren(...tracks.map((track) => {
      const row = document.createElement("tr");
      row.dataset.track = String(track.track_id);
      const face = document.createElement("td");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = window.FaceTracking.trackColour(track.track_id);
      face.append(swatch, document.createTextNode("Face " + track.track_id));
      const seen = document.createElement("td");
      seen.textContent = track.first_s.toFixed(1) + "–" + track.last_s.toFixed(1) + " s (" + track.frames + " frames)";
      const mostly = document.createElement("td");
      mostly.textContent = track.dominant_emotion;
      const share = document.createElement("td");
      share.textContent = Object.entries(track.share).filter((e) => e[1] > 0).sort((a, b) => b[1] - a[1])
        .map(([name, s]) => name + " " + pct(s)).join(", ");
      row.append(face, seen, mostly, share);
      return row;
    }));
  }

  // ---------- downloads ----------
  function downloadName(suffix) {
    return window.FaceDownloads.stem(state.file && state.file.name, "clip") + suffix;
  }

  function downloadJson() {
    if (state.analysis) window.FaceDownloads.saveJson(state.analysis, downloadName("-emotions.json"));
  }

  function downloadCsv() {
    if (!state.analysis) return;
    const path = (state.file && state.file.name) || "";
    window.FaceDownloads.saveCsv(window.FaceDownloads.videoCsv(state.analysis, path), downloadName("-emotions.csv"));
  }

  function once(target, type) {
    return new Promise((resolve, reject) => {
      target.addEventListener(type, resolve, { once: true });
      target.addEventListener("error", () => reject(new Error("the clip could not be played")), { once: true });
    });
  }

  /* The clip with its boxes and labels burnt in, as WebM: the browser plays a copy of the clip
   * once, in real time, drawing each frame and its faces onto a canvas that MediaRecorder
   * records. Nothing is uploaded; the file is made here. */
  async function downloadAnnotated() {
    if (!state.analysis || !state.url || state.recording) return;
    const type = ["video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm"]
      .find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t));
    if (!type) {
      els.downloadStatus.textContent = "This browser cannot record video (no MediaRecorder for WebM).";
      return;
    }
    state.recording = true;
    els.downloadVideo.disabled = true;
    els.downloadStatus.textContent = "Making the annotated clip (it plays through once)…";
    const player = document.createElement("video");
    player.muted = true;
    player.playsInline = true;
    player.className = "recording-source";
    player.src = state.url;
    document.body.appendChild(player);  // some browsers give a detached video no frames
    try {
      await once(player, "loadeddata");
      const canvas = document.createElement("canvas");
      canvas.width = player.videoWidth;
      canvas.height = player.videoHeight;
      const ctx = canvas.getContext("2d");
      const size = state.analysis.summary.video;
      const paint = (t) => {
        ctx.drawImage(player, 0, 0, canvas.width, canvas.height);
        window.FaceLabels.drawFaces(ctx, facesAt(t), canvas.width / size.width, canvas.height / size.height,
                                    canvas.width, canvas.height, false);
      };
      paint(0);
      const recorder = new MediaRecorder(canvas.captureStream(), { mimeType: type });
      const chunks = [];
      recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
      const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
      recorder.start(250);
      const step = (now, metadata) => {
        paint(metadata.mediaTime);
        if (!player.ended) player.requestVideoFrameCallback(step);
      };
      player.requestVideoFrameCallback(step);
      const ended = once(player, "ended");
      await player.play();
      await ended;
      recorder.stop();
      await stopped;
      window.FaceDownloads.save(new Blob(chunks, { type: "video/webm" }), downloadName("-annotated.webm"));
      els.downloadStatus.textContent = "Annotated clip saved.";
    } catch (e) {
      els.downloadStatus.textContent = "The annotated clip could not be made: " + ((e && e.message) || e);
    } finally {
      player.remove();
      state.recording = false;
      els.downloadVideo.disabled = false;
    }
  }

  // ---------- wiring ----------
  els.input.addEventListener("change", () => chooseFile(els.input.files[0]));
  els.form.addEventListener("submit", (event) => { event.preventDefault(); analyse(); });
  els.timeline.addEventListener("click", seekFromTimeline);
  els.downloadJson.addEventListener("click", downloadJson);
  els.downloadCsv.addEventListener("click", downloadCsv);
  els.downloadVideo.addEventListener("click", downloadAnnotated);
  ["seeked", "timeupdate", "loadeddata"].forEach((type) =>
    els.video.addEventListener(type, () => drawAt(els.video.currentTime)));
  if (els.video.requestVideoFrameCallback) els.video.requestVideoFrameCallback(onFrame);
  ["dragenter", "dragover"].forEach((type) => els.drop.addEventListener(type, (event) => {
    event.preventDefault();
    els.drop.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => els.drop.addEventListener(type, () => els.drop.classList.remove("dragging")));
  els.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) chooseFile(file);
  });
  document.addEventListener("face-emotion:mode", (event) => {
    if (event.detail.mode !== "video") els.video.pause();
  });
})();
