/* Face tracking, smoothing and clip results for live frames and clips analysed on this device,
 * the browser's side of face_emotion.video: the same rules and the same JSON as the server's
 * clip analysis, so a face keeps its number, its label does not flicker, and a clip's answer
 * reads like POST /predict/video's.
 *
 * - Tracking: each track predicts its box with constant velocity (the motion model ByteTrack's
 *   Kalman filter uses on the server), and boxes are matched to predictions by IoU, best pair
 *   first, at least 0.1; a track unseen for lostTrackS is dropped. Numbers start at 1.
 * - Smoothing: an exponential moving average of each track's probabilities with time constant
 *   smoothS seconds (weight of a new frame 1 - exp(-dt / tau)), as video/smoothing.py does, so
 *   it means the same at 5 frames a second as at 30.
 * - Results: frameJson, summarise and clipAnswer build what video/results.py FrameResult.to_dict,
 *   video/summary.py SummaryBuilder and ClipAnalysis.to_dict build (tests/test_clip_builders.py
 *   runs both on the same frames and compares).
 * The defaults (smoothing, lost track, sample rate) are the server's (ServerConfig.page_settings),
 * read from the page's <main data-video>: none is written here. No dependencies; loaded before
 * app.js; loadable in Node (module.exports) for the tests. */
"use strict";

(function (root) {
  const MIN_IOU = 0.1;

  /* The video and tracking settings the server wrote into the page (sample_fps, smooth_s,
   * lost_track_s, forget_after_s). */
  function pageSettings() {
    const main = typeof document !== "undefined" && document.getElementById("main");
    if (!main || !main.dataset.video) throw new Error("the page carries no video settings (data-video)");
    return JSON.parse(main.dataset.video);
  }

  function iou(a, b) {
    const x0 = Math.max(a.x, b.x), y0 = Math.max(a.y, b.y);
    const x1 = Math.min(a.x + a.width, b.x + b.width), y1 = Math.min(a.y + a.height, b.y + b.height);
    const inter = Math.max(0, x1 - x0) * Math.max(0, y1 - y0);
    const union = a.width * a.height + b.width * b.height - inter;
    return union > 0 ? inter / union : 0;
  }

  function emaWeight(dt, tau) {
    return tau <= 0 ? 1 : 1 - Math.exp(-Math.max(dt, 0) / tau);
  }

  function topOf(probabilities) {
    let best = null, p = -1;
    Object.keys(probabilities).forEach((name) => {
      if (probabilities[name] > p) { best = name; p = probabilities[name]; }
    });
    return [best, p];
  }

  class Tracker {
    /* settings: {smooth_s, lost_track_s, forget_after_s} (pageSettings()); smoothS overrides smooth_s. */
    constructor(settings, smoothS) {
      this.smoothS = smoothS === undefined ? settings.smooth_s : smoothS;
      this.lostS = settings.lost_track_s;
      this.forgetS = settings.forget_after_s;
      this.reset();
    }

    reset() {
      this.tracks = [];
      this.nextId = 1;
    }

    predicted(track, t) {
      const dt = t - track.time;
      return { x: track.box.x + track.vx * dt, y: track.box.y + track.vy * dt,
               width: track.box.width, height: track.box.height };
    }

    /* faces: the API's faces (box, emotion, confidence, probabilities); timeS: when the frame was
     * taken, in seconds. Returns the faces with track_id and smoothed emotion/confidence/probabilities. */
    update(faces, timeS) {
      this.tracks = this.tracks.filter((track) => timeS - track.time <= this.lostS);
      const pairs = [];
      this.tracks.forEach((track, ti) => {
        const guess = this.predicted(track, timeS);
        faces.forEach((face, fi) => {
          const overlap = iou(guess, face.box);
          if (overlap >= MIN_IOU) pairs.push([overlap, ti, fi]);
        });
      });
      pairs.sort((a, b) => b[0] - a[0]);
      const trackOf = new Array(faces.length).fill(null);
      const usedTracks = new Set();
      pairs.forEach(([, ti, fi]) => {
        if (usedTracks.has(ti) || trackOf[fi] !== null) return;
        usedTracks.add(ti);
        trackOf[fi] = this.tracks[ti];
      });
      return faces.map((face, fi) => {
        let track = trackOf[fi];
        if (track === null) {
          track = { id: this.nextId++, box: face.box, vx: 0, vy: 0, time: timeS, probs: null };
          this.tracks.push(track);
        } else {
          const dt = timeS - track.time;
          if (dt > 0) {
            // Velocity of the box's corner, itself smoothed so one jumpy detection does not throw it.
            const w = emaWeight(dt, 0.3);
            track.vx += w * ((face.box.x - track.box.x) / dt - track.vx);
            track.vy += w * ((face.box.y - track.box.y) / dt - track.vy);
          }
        }
        const probs = this.smooth(track, face.probabilities, timeS);
        track.box = face.box;
        track.time = timeS;
        const [emotion, confidence] = topOf(probs);
        return Object.assign({}, face, { track_id: track.id, probabilities: probs, emotion, confidence });
      });
    }

    smooth(track, probabilities, timeS) {
      if (!track.probs || timeS - track.time > this.forgetS || this.smoothS <= 0) {
        track.probs = Object.assign({}, probabilities);
        return track.probs;
      }
      const w = emaWeight(timeS - track.time, this.smoothS);
      Object.keys(probabilities).forEach((name) => {
        const before = track.probs[name] === undefined ? probabilities[name] : track.probs[name];
        track.probs[name] = before + w * (probabilities[name] - before);
      });
      return Object.assign({}, track.probs);
    }
  }

  // Colours per track number, the same as the server's annotated clips (video/annotate.py).
  const TRACK_COLOURS = ["#ffd200", "#3ec1ff", "#ff78b4", "#78e678", "#ffa03c", "#be96ff"];

  function trackColour(id) {
    return id ? TRACK_COLOURS[(id - 1) % TRACK_COLOURS.length] : "#c8c8c8";
  }

  // ---------------------------------------------------------------- results (video/results.py)
  function roundTo(x, digits) {
    const k = Math.pow(10, digits);
    return Math.round(x * k) / k;
  }

  function topIndex(row) {
    let top = 0;
    row.forEach((p, k) => { if (p > row[top]) top = k; });
    return top;
  }

  /* One analysed frame -> FrameResult.to_dict(in_clip=True). frame: {frame (index or null),
   * time_s, faces: [{track_id, box, score, probabilities (by class name, unrounded)}]}. */
  function frameJson(frame, classes) {
    const faces = frame.faces.map((face) => {
      const row = classes.map((name) => face.probabilities[name]);
      const top = topIndex(row), probabilities = {};
      classes.forEach((name, k) => { probabilities[name] = roundTo(row[k], 6); });
      return { track_id: face.track_id, box: face.box, score: roundTo(face.score, 4), emotion: classes[top],
               confidence: roundTo(row[top], 4), probabilities: probabilities };
    });
    return { frame: frame.frame, time_s: roundTo(frame.time_s, 4), emotion: faces.length ? faces[0].emotion : null,
             confidence: faces.length ? faces[0].confidence : null, faces: faces };
  }

  /* SummaryBuilder(...).summary().to_dict() of the same frames: per track first/last time,
   * frames, dominant emotion (ties to the higher mean probability), share of frames per label,
   * mean probabilities; the clip's label of the most face-frames. info: VideoInfo.to_dict(). */
  function summarise(frames, classes, info) {
    const series = new Map();
    let last = 0;
    frames.forEach((frame) => {
      last = Math.max(last, frame.time_s);
      frame.faces.forEach((face) => {
        if (face.track_id === null) return;
        if (!series.has(face.track_id)) series.set(face.track_id, { times: [], probs: [] });
        const s = series.get(face.track_id);
        s.times.push(frame.time_s);
        s.probs.push(classes.map((name) => face.probabilities[name]));
      });
    });
    const labelFrames = classes.map(() => 0);
    const tracks = Array.from(series.keys()).sort((a, b) => a - b).map((id) => {
      const s = series.get(id), n = s.probs.length;
      const counts = classes.map(() => 0), total = classes.map(() => 0);
      s.probs.forEach((row) => {
        row.forEach((p, k) => { total[k] += p; });
        counts[topIndex(row)] += 1;
      });
      const mean = total.map((sum) => sum / n);
      counts.forEach((c, k) => { labelFrames[k] += c; });
      let dominant = 0;
      classes.forEach((_, k) => {
        if (counts[k] > counts[dominant] || (counts[k] === counts[dominant] && mean[k] > mean[dominant])) dominant = k;
      });
      const share = {}, meanProbabilities = {};
      classes.forEach((name, k) => {
        share[name] = roundTo(counts[k] / n, 4);
        meanProbabilities[name] = roundTo(mean[k], 6);
      });
      return { track_id: id, first_s: roundTo(s.times[0], 3), last_s: roundTo(s.times[n - 1], 3), frames: n,
               dominant_emotion: classes[dominant], share: share, mean_probabilities: meanProbabilities };
    });
    const top = topIndex(labelFrames);
    return { frames_analysed: frames.length, duration_s: roundTo(last, 3), video: info,
             dominant_emotion: labelFrames[top] > 0 ? classes[top] : null, tracks: tracks };
  }

  /* ClipAnalysis.to_dict: the POST /predict/video answer of these frames. */
  function clipAnswer(frames, classes, info, options) {
    return { summary: summarise(frames, classes, info), frames: frames.map((f) => frameJson(f, classes)),
             classes: classes.slice(), sample_fps: options.sample_fps, smooth_s: options.smooth_s,
             model: options.model, elapsed_ms: options.elapsed_ms === undefined ? null : roundTo(options.elapsed_ms, 1) };
  }

  // ---------------------------------------------------------------- what the container says (video/decode.py)
  /* decode.py sniff_container: the FFmpeg demuxer name for a clip's first bytes, null if unknown. */
  function sniffContainer(head) {
    const text = (a, b) => String.fromCharCode(...head.subarray(a, b));
    if (head.length >= 8 && ["ftyp", "moov", "mdat", "free", "wide", "skip"].includes(text(4, 8))) return "mov";
    if (head[0] === 0x1a && head[1] === 0x45 && head[2] === 0xdf && head[3] === 0xa3) return "matroska";
    if (text(0, 4) === "RIFF" && text(8, 12) === "AVI ") return "avi";
    if (head.length > 188 && head[0] === 0x47 && head[188] === 0x47) return "mpegts";
    return null;
  }

  const MP4_CODECS = { avc1: "h264", avc3: "h264", hvc1: "hevc", hev1: "hevc", vp09: "vp9", av01: "av1", mp4v: "mpeg4" };

  /* The boxes of an MP4 (ISO BMFF) between start and end: [{type, start (payload), end}]. */
  function boxes(view, start, end) {
    const out = [];
    let at = start;
    while (at + 8 <= end) {
      let size = view.getUint32(at), header = 8;
      const type = String.fromCharCode(view.getUint8(at + 4), view.getUint8(at + 5), view.getUint8(at + 6),
                                       view.getUint8(at + 7));
      if (size === 1) { size = Number(view.getBigUint64(at + 8)); header = 16; } else if (size === 0) size = end - at;
      if (size < header || at + size > end) break;
      out.push({ type: type, start: at + header, end: at + size });
      at += size;
    }
    return out;
  }

  function child(view, box, type) {
    return box && boxes(view, box.start, box.end).find((b) => b.type === type);
  }

  /* VideoInfo.to_dict() of a clip's bytes as far as the browser can tell: the container for the
   * four families decode.py reads; for MP4/MOV also frames, fps, duration and codec from the
   * video track's header (the frame count of its sample table, fps = frames / duration, as
   * FFmpeg's average rate). width and height come from the player. */
  function clipInfo(bytes, width, height) {
    const info = { width: width, height: height, fps: null, duration_s: null, frames: null,
                   container: sniffContainer(bytes.subarray(0, 512)), codec: null };
    if (info.container !== "mov") return info;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const moov = boxes(view, 0, bytes.byteLength).find((b) => b.type === "moov");
    for (const trak of moov ? boxes(view, moov.start, moov.end).filter((b) => b.type === "trak") : []) {
      const mdia = child(view, trak, "mdia"), hdlr = child(view, mdia, "hdlr"), mdhd = child(view, mdia, "mdhd");
      if (!hdlr || !mdhd || String.fromCharCode(...bytes.subarray(hdlr.start + 8, hdlr.start + 12)) !== "vide") continue;
      const version = view.getUint8(mdhd.start);
      const timescale = view.getUint32(mdhd.start + (version === 1 ? 20 : 12));
      const duration = version === 1 ? Number(view.getBigUint64(mdhd.start + 24)) : view.getUint32(mdhd.start + 16);
      const stbl = child(view, child(view, mdia, "minf"), "stbl");
      const stsz = child(view, stbl, "stsz"), stsd = child(view, stbl, "stsd");
      if (stsz) info.frames = view.getUint32(stsz.start + 8) || null;
      if (stsd) info.codec = MP4_CODECS[String.fromCharCode(...bytes.subarray(stsd.start + 12, stsd.start + 16))] || null;
      if (timescale && duration) {
        info.duration_s = roundTo(duration / timescale, 3);
        if (info.frames) info.fps = roundTo(info.frames * timescale / duration, 3);
      }
      break;
    }
    return info;
  }

  root.FaceTracking = { Tracker, emaWeight, iou, trackColour, pageSettings, frameJson, summarise, clipAnswer,
                        sniffContainer, clipInfo };
  if (typeof module !== "undefined" && module.exports) module.exports = root.FaceTracking;
})(typeof window !== "undefined" ? window : globalThis);
