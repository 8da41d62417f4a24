/* "On this device" in the page: loads the model manifest, ONNX Runtime Web and the two ONNX files
 * (all from this origin), and runs ondevice.js's Pipeline on photos, webcam frames and clips.
 * Nothing the user chooses or films is sent anywhere in this mode.
 * Needs ondevice.js and tracking.js; onnxruntime-web is loaded on first use. */
"use strict";

(function () {
  const main = document.getElementById("main");
  const urlOfManifest = new URL((main && main.dataset.manifest) || "model-files/manifest.json", document.baseURI);

  function localError(message) {
    const error = new Error(message);
    error.localError = true;
    return error;
  }

  function loadScript(url) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = url;
      script.onload = resolve;
      script.onerror = () => reject(localError("ONNX Runtime Web could not be loaded from " + url +
                                                " (run `make setup`, which installs it)"));
      document.head.appendChild(script);
    });
  }

  async function fetchBytes(url) {
    const response = await fetch(url);
    if (!response.ok) throw localError("could not load " + url + " (" + response.status + ")");
    return new Uint8Array(await response.arrayBuffer());
  }

  let ready = null;

  /* Loads everything once; later calls share the same promise. */
  function load() {
    if (!ready) ready = loadOnce().catch((error) => { ready = null; throw error; });
    return ready;
  }

  async function loadOnce() {
    const response = await fetch(urlOfManifest);
    if (!response.ok) {
      let message = "the server answered " + response.status;
      try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
      throw localError("On this device is not available: " + message);
    }
    const manifest = await response.json();
    const base = new URL(manifest.base || "model-files/", urlOfManifest);
    const runtime = new URL(manifest.runtime || "static/vendor/onnxruntime-web/", urlOfManifest);
    if (!window.ort) await loadScript(new URL("ort.wasm.min.js", runtime).href);
    const ort = window.ort;
    ort.env.wasm.wasmPaths = runtime.href;
    ort.env.logLevel = "error";  // its warnings (unused initialisers) are no news to a user
    // Threads need SharedArrayBuffer, which only a cross-origin isolated page has (the server
    // sends COOP and COEP; a plain static host usually does not, and then one thread runs).
    // ?threads=N chooses (benchmarks compare them).
    const asked = parseInt(new URLSearchParams(location.search).get("threads") || "", 10);
    const most = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    ort.env.wasm.numThreads = asked > 0 ? Math.min(asked, most) : most;
    const options = { executionProviders: ["wasm"], graphOptimizationLevel: "all", logSeverityLevel: 3 };
    // The lighter files by default (weights stored in fewer bytes; server/model_files.py says how
    // close they answer); ?weights=exact loads the bytes the server runs.
    const exact = new URLSearchParams(location.search).get("weights") === "exact";
    const fileOf = (entry) => (exact && entry.exact ? entry.exact : entry).file;
    const [classifierBytes, detectorBytes] = await Promise.all([
      fetchBytes(new URL(fileOf(manifest.model), base).href),
      manifest.detector.file ? fetchBytes(new URL(fileOf(manifest.detector), base).href) : Promise.resolve(null),
    ]);
    const classifier = await ort.InferenceSession.create(classifierBytes, options);
    const detector = detectorBytes ? await ort.InferenceSession.create(detectorBytes, options) : null;
    // One run at a time per session: ONNX Runtime Web refuses overlapping runs.
    let queue = Promise.resolve();
    const serial = (job) => { const next = queue.then(job, job); queue = next.catch(() => {}); return next; };
    const runDetector = (blob, dims) => serial(async () => {
      const feeds = {};
      feeds[detector.inputNames[0]] = new ort.Tensor("float32", blob, dims);
      const out = await detector.run(feeds);
      // Outputs in the file's order: heat map, log-sizes, offsets, landmarks.
      const [heat, logSize, offset, marks] = detector.outputNames.map((name) => out[name].data);
      return { heat, logSize, offset, marks };
    });
    const runClassifier = (batch, dims) => serial(async () => {
      const feeds = {};
      feeds[classifier.inputNames[0]] = new ort.Tensor("float32", batch, dims);
      const out = await classifier.run(feeds);
      return out[classifier.outputNames[0]].data;
    });
    const pipeline = new window.FaceOnDevice.Pipeline(manifest, runDetector, runClassifier);
    return { manifest, pipeline, threads: ort.env.wasm.numThreads };
  }

  // ---------- pixels ----------
  const scratch = document.createElement("canvas");

  function pixelsOf(source, width, height) {
    scratch.width = width;
    scratch.height = height;
    const ctx = scratch.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(source, 0, 0, width, height);
    const rgba = ctx.getImageData(0, 0, width, height).data;
    return window.FaceOnDevice.steps.rgbFromRgba(width, height, rgba);
  }

  /* A photo file -> the /predict answer, computed here. EXIF orientation is applied as the server
   * does; no colour-profile conversion, as PIL makes none. */
  async function analyseFile(file, options) {
    const { pipeline } = await load();
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image", colorSpaceConversion: "none" });
    } catch (e) {
      throw localError("This file is not an image this browser can read.");
    }
    if (options && options.signal && options.signal.aborted) throw localError("aborted");
    const image = pixelsOf(bitmap, bitmap.width, bitmap.height);
    bitmap.close();
    return pipeline.analyse(image);
  }

  /* A video element's current frame, scaled to `width` px wide -> {result, grabMs}. follower
   * (optional): a FaceFollower of this stream (newFollower), which looks for its faces where they
   * were in the last frame. */
  async function analyseFrame(video, width, follower) {
    const { pipeline } = await load();
    const t0 = performance.now();
    const scale = Math.min(1, width / video.videoWidth);
    const w = Math.round(video.videoWidth * scale), h = Math.round(video.videoHeight * scale);
    const image = pixelsOf(video, w, h);
    const t1 = performance.now();
    const result = await pipeline.analyse(image, follower);
    return { result: result, grabMs: t1 - t0 };
  }

  function newFollower(options) {
    return new window.FaceOnDevice.FaceFollower(options);
  }

  // ---------- clips ----------
  function waitFor(target, type) {
    return new Promise((resolve, reject) => {
      const done = () => { target.removeEventListener("error", failed); resolve(); };
      const failed = () => { target.removeEventListener(type, done); reject(localError("This clip cannot be played by this browser.")); };
      target.addEventListener(type, done, { once: true });
      target.addEventListener("error", failed, { once: true });
    });
  }

  /* A clip (object URL, and options.file: its File) -> the /predict/video answer, computed here: a frame every 1 / sample_fps s,
   * faces numbered and smoothed by tracking.js (the webcam's rules), the answer built by
   * tracking.js clipAnswer (the mirror of ClipAnalysis.to_dict). Sample rate and smoothing
   * default to the server's (the page's settings). */
  async function analyseClip(url, options) {
    const { pipeline, manifest } = await load();
    const settings = window.FaceTracking.pageSettings();
    const sampleFps = options.sampleFps || settings.sample_fps;
    const smoothS = options.smoothS === undefined ? settings.smooth_s : options.smoothS;
    const start = performance.now();
    // The file itself (the page's policy lets it fetch nothing but its own origin, not blob: URLs).
    const bytes = new Uint8Array(await options.file.arrayBuffer());
    const video = document.createElement("video");
    video.muted = true;
    video.preload = "auto";
    video.src = url;
    await waitFor(video, "loadeddata");
    const duration = video.duration, width = video.videoWidth, height = video.videoHeight;
    const info = window.FaceTracking.clipInfo(bytes, width, height);
    if (info.duration_s === null && Number.isFinite(duration)) info.duration_s = Math.round(duration * 1000) / 1000;
    const tracker = new window.FaceTracking.Tracker(settings, smoothS);
    const frames = [];
    const step = 1 / sampleFps;
    // The frames the server's sampling takes: one at or after each step, none at the very end
    // (the last frame starts one frame before the clip's duration).
    for (let k = 0; k * step < duration - 1e-6; k++) {
      const t = k * step;
      if (Math.abs(video.currentTime - t) > 1e-4) {
        const seeked = waitFor(video, "seeked");
        video.currentTime = t;
        await seeked;
      }
      const result = await pipeline.analyse(pixelsOf(video, width, height));
      // The face's own probabilities (smoothed along its track) and box, unrounded: the answer rounds.
      const faces = tracker.update(result.faces, t).map((face) => ({
        track_id: face.track_id, box: face.box, score: face.score, probabilities: face.probabilities }));
      // The frame shown at t, counted as the server's decoder counts frames (when the rate is known).
      const frame = info.fps ? Math.floor(t * info.fps + 1e-6) : null;
      frames.push({ frame: frame, time_s: t, faces: faces });
      if (options.onProgress) options.onProgress(Math.min(1, t / Math.max(duration, 1e-3)));
    }
    video.removeAttribute("src");
    video.load();
    const answer = window.FaceTracking.clipAnswer(frames, manifest.model.spec.classes, info, {
      sample_fps: sampleFps, smooth_s: smoothS, model: manifest.model.spec.name, elapsed_ms: performance.now() - start });
    answer.on_device = true;
    return answer;
  }

  window.FaceLocal = { load, analyseFile, analyseFrame, newFollower, analyseClip };
})();
