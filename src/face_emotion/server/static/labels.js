/* Where each face's label goes, for every view of the page: photo boxes (DOM), video boxes (DOM)
 * and the webcam overlay (canvas). One rule everywhere, so neighbouring faces never hide each
 * other's labels: largest face first, each label above its box, else below, else inside its top or
 * bottom edge, left- or right-aligned, kept inside the picture and off every other label and every
 * other face's box; where the full label fits nowhere, only the face's number is shown. A full
 * label never sits inside its own face's box (it would hide the face it names); only the number
 * may. On a small picture (a phone) every label is the number alone: the words are in the list.
 * drawFaces needs tracking.js (colours); loaded before app.js and video.js. */
"use strict";

(function () {
  function clampInto(x, y, w, h, width, height) {
    return { x: Math.max(0, Math.min(x, width - w)), y: Math.max(0, Math.min(y, height - h)), w: w, h: h };
  }

  function overlaps(a, b) {
    return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
  }

  /* A free w x h spot for the label of rects[i], or null. rects: every face's box {x, y, w, h};
   * placed: labels placed so far; width, height: the picture; inside: whether the spots inside the
   * face's own box may be used. */
  function freeSpot(rects, i, w, h, placed, width, height, inside) {
    const r = rects[i];
    const rows = [r.y - h, r.y + r.h];  // above, below
    if (inside) rows.push(r.y, r.y + r.h - h);  // inside top, inside bottom
    const columns = [r.x, r.x + r.w - w];
    for (const y of rows) {
      for (const x of columns) {
        const spot = clampInto(x, y, w, h, width, height);
        if (spot.y !== y) continue;  // a row that leaves the picture vertically is not this row
        const clear = placed.every((p) => !overlaps(spot, p)) &&
          rects.every((other, j) => j === i || !overlaps(spot, other));
        if (clear) return spot;
      }
    }
    return null;
  }

  /* Places every label. rects: boxes in drawing order (largest first); measure(i, text) -> {w, h};
   * texts(i) -> [full, short] (or [short]): the last, shortest one alone may go inside its box.
   * Returns [{x, y, w, h, text}] in the same order. */
  function layout(rects, texts, measure, width, height) {
    const placed = [];
    return rects.map((rect, i) => {
      let spot = null, size = null, chosen = null;
      const choices = texts(i);
      for (const [k, text] of choices.entries()) {
        chosen = text;
        size = measure(i, text);
        spot = freeSpot(rects, i, size.w, size.h, placed, width, height, k === choices.length - 1);
        if (spot) break;
      }
      if (!spot) spot = clampInto(rect.x, rect.y, size.w, size.h, width, height);
      placed.push(spot);
      return Object.assign({ text: chosen }, spot);
    });
  }

  // Narrower than this, a picture (a phone's, 390 px wide) carries the faces' numbers only: a label
  // such as "3 happiness 87%" is wider than a face there and would cover faces.
  const SMALL_PICTURE_PX = 480;

  /* Lays out the .face-label of every .face-box inside `overlay` (boxes placed in %, labels
   * carrying data-full and data-short). Run again whenever the picture changes size. */
  function layoutIn(overlay) {
    const frame = overlay.getBoundingClientRect();
    if (!frame.width || !frame.height) return;
    // Boxes sit at fractions of a pixel (they are placed in %): measure them exactly.
    const within = (el) => {
      const r = el.getBoundingClientRect();
      return { x: r.left - frame.left, y: r.top - frame.top, w: r.width, h: r.height };
    };
    const boxes = Array.from(overlay.querySelectorAll(".face-box"));
    const labels = boxes.map((box) => box.querySelector(".face-label"));
    labels.forEach((label) => { label.style.bottom = "auto"; });
    const rects = boxes.map(within);
    const small = frame.width < SMALL_PICTURE_PX;
    const texts = (i) => (small ? [labels[i].dataset.short] : [labels[i].dataset.full, labels[i].dataset.short]);
    const spots = layout(rects, texts, (i, text) => {
      labels[i].textContent = text;
      return within(labels[i]);
    }, frame.width, frame.height);
    spots.forEach((spot, i) => {
      labels[i].textContent = spot.text;
      // The label's offsets are from the inside of its box's border.
      labels[i].style.left = (spot.x - rects[i].x - boxes[i].clientLeft) + "px";
      labels[i].style.top = (spot.y - rects[i].y - boxes[i].clientTop) + "px";
    });
  }

  const LABEL_H = 22;

  /* Draws numbered faces (with track_id, emotion, confidence; boxes in picture pixels) on a 2-D
   * canvas context that is width x height, picture pixels scaled by (sx, sy); mirror: flip x
   * (the webcam is shown like a mirror; text is not mirrored). Returns the boxes and labels drawn. */
  function drawFaces(ctx, faces, sx, sy, width, height, mirror) {
    ctx.lineWidth = 3;
    ctx.font = "600 15px system-ui, sans-serif";
    ctx.textBaseline = "bottom";
    const rects = faces.map((face) => {
      const x = face.box.x * sx, w = face.box.width * sx;
      return { x: mirror ? width - x - w : x, y: face.box.y * sy, w: w, h: face.box.height * sy };
    });
    const number = (face) => (face.track_id === null || face.track_id === undefined ? "" : face.track_id + " ");
    const spots = layout(rects, (i) => [
      number(faces[i]) + faces[i].emotion + " " + Math.round(faces[i].confidence * 100) + "%",
      number(faces[i]).trim()], (i, text) => ({ w: ctx.measureText(text).width + 10, h: LABEL_H }), width, height);
    faces.forEach((face, i) => {
      const r = rects[i];
      ctx.strokeStyle = window.FaceTracking.trackColour(face.track_id);
      ctx.strokeRect(r.x, r.y, r.w, r.h);
    });
    spots.forEach((spot) => {
      if (!spot.text) return;
      ctx.fillStyle = "rgba(0,0,0,0.75)";
      ctx.fillRect(spot.x, spot.y, spot.w, spot.h);
      ctx.fillStyle = "#fff";
      ctx.fillText(spot.text, spot.x + 5, spot.y + spot.h - 3);
    });
    return { rects: rects, labels: spots };
  }

  window.FaceLabels = { layout, layoutIn, overlaps, drawFaces };
})();
