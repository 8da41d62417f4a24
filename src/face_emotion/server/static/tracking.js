/* Face tracking and smoothing for live frames (webcam mode), the browser's side of
 * face_emotion.video: the same rules as the server's clip analysis, so a face keeps its number
 * and its label does not flicker.
 *
 * - Tracking: each track predicts its box with constant velocity (the motion model ByteTrack's
 *   Kalman filter uses on the server), and boxes are matched to predictions by IoU, best pair
 *   first, at least 0.1; a track unseen for LOST_TRACK_S is dropped. Numbers start at 1.
 * - Smoothing: an exponential moving average of each track's probabilities with time constant
 *   SMOOTH_S seconds (weight of a new frame 1 - exp(-dt / tau)), as video/smoothing.py does, so
 *   it means the same at 5 frames a second as at 30.
 * No dependencies; loaded before app.js. */
"use strict";

(function () {
  const SMOOTH_S = 0.5;        // face_emotion.video.smoothing.DEFAULT_SMOOTH_S
  const LOST_TRACK_S = 1.0;    // VideoOptions.lost_track_s
  const MIN_IOU = 0.1;
  const FORGET_AFTER_S = 2.0;  // a track seen again after this long starts its smoothing afresh

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
    constructor(options) {
      const o = options || {};
      this.smoothS = o.smoothS === undefined ? SMOOTH_S : o.smoothS;
      this.lostS = o.lostTrackS === undefined ? LOST_TRACK_S : o.lostTrackS;
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
      if (!track.probs || timeS - track.time > FORGET_AFTER_S || this.smoothS <= 0) {
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

  window.FaceTracking = { Tracker, emaWeight, iou, trackColour, SMOOTH_S };
})();
