/* "On this device": the server's path from pixels to answer, run in the browser with ONNX Runtime
 * Web, so no frame or photo leaves the page. Each step follows the Python module named beside it
 * and reads its constants from the model's manifest (server/model_files.py), never from here:
 *
 *   pixels -> working copy (faces/base.py working_copy; PIL's resampling, bit for bit)
 *          -> CenterFace (faces/centerface_detector.py: padding, peak decoding, NMS, make_face)
 *          -> crop (faces/crop.py: five-point template fit, OpenCV's fixed-point bilinear warp)
 *          -> eval transform (transforms.py: detail level, resize, grey/RGB, normalisation)
 *          -> classifier ONNX -> softmax(logits / temperature) (inference/predictor.py)
 *          -> the /predict answer's JSON shape (inference/results.py ImageResult.to_dict).
 *
 * The pure steps work without a browser (tests run them in Node against the Python ones); the
 * runtime part needs window.ort (onnxruntime-web, served from this origin). */
"use strict";

(function (root) {
  // ---------------------------------------------------------------- numbers as Python has them
  /* Python's round(): halves go to the even neighbour (round(2.5) == 2). */
  function roundHalfEven(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  function roundTo(x, digits) {
    const k = Math.pow(10, digits);
    return Math.round(x * k) / k;
  }

  // ---------------------------------------------------------------- images
  /* An RGB image: {width, height, data: Uint8Array of width * height * 3}. */
  function rgbFromRgba(width, height, rgba) {
    const data = new Uint8Array(width * height * 3);
    for (let i = 0, j = 0; i < data.length; i += 3, j += 4) {
      data[i] = rgba[j]; data[i + 1] = rgba[j + 1]; data[i + 2] = rgba[j + 2];
    }
    return { width: width, height: height, data: data };
  }

  // PIL's resampling (Pillow's Resample.c): separable, horizontal pass first, each pass rounded to
  // 8 bits with 22-bit fixed-point weights; BILINEAR is the triangle filter, widened by the
  // shrink factor (which is what makes PIL's downscaling antialiased).
  const PRECISION_BITS = 22;
  const ONE = Math.pow(2, PRECISION_BITS);

  // Webcam frames repeat the same sizes: their weights are computed once.
  const weightCache = new Map();

  function resampleWeights(inSize, outSize, box0, box1) {
    const key = inSize + ":" + outSize + ":" + box0 + ":" + box1;
    let cached = weightCache.get(key);
    if (!cached) {
      if (weightCache.size > 64) weightCache.clear();
      cached = computeWeights(inSize, outSize, box0, box1);
      weightCache.set(key, cached);
    }
    return cached;
  }

  function computeWeights(inSize, outSize, box0, box1) {
    // Pillow passes the box to C as single-precision floats (it is fractional after a reduce).
    box0 = Math.fround(box0);
    box1 = Math.fround(box1);
    const scale = Math.fround(box1 - box0) / outSize;
    const filterScale = Math.max(scale, 1.0);
    const support = 1.0 * filterScale;
    const taps = Math.ceil(support) * 2 + 1;
    const first = new Int32Array(outSize), count = new Int32Array(outSize);
    const weights = new Float64Array(outSize * taps);
    for (let xx = 0; xx < outSize; xx++) {
      const center = box0 + (xx + 0.5) * scale;
      const ss = 1.0 / filterScale;
      let xmin = Math.trunc(center - support + 0.5);
      if (xmin < 0) xmin = 0;
      let xmax = Math.trunc(center + support + 0.5);
      if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      const k = new Float64Array(xmax);
      let total = 0;
      for (let x = 0; x < xmax; x++) {
        const t = Math.abs((x + xmin - center + 0.5) * ss);
        const w = t < 1.0 ? 1.0 - t : 0.0;
        k[x] = w;
        total += w;
      }
      for (let x = 0; x < xmax; x++) {
        const w = total !== 0 ? k[x] / total : 0;
        // Pillow's normalize_coeffs_8bpc: to fixed point, rounded away from zero.
        weights[xx * taps + x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
      }
      first[xx] = xmin;
      count[xx] = xmax;
    }
    return { first: first, count: count, weights: weights, taps: taps };
  }

  function clip8(ss) {
    const v = Math.floor(ss / ONE);
    return v < 0 ? 0 : v > 255 ? 255 : v;
  }

  function resampleHorizontal(image, outWidth, box0, box1, channels) {
    const { width, height, data } = image;
    const c = resampleWeights(width, outWidth, box0, box1);
    const out = new Uint8Array(outWidth * height * channels);
    for (let y = 0; y < height; y++) {
      const row = y * width * channels, outRow = y * outWidth * channels;
      for (let xx = 0; xx < outWidth; xx++) {
        const x0 = c.first[xx], n = c.count[xx], base = xx * c.taps;
        for (let ch = 0; ch < channels; ch++) {
          let ss = ONE / 2;
          for (let x = 0; x < n; x++) ss += data[row + (x0 + x) * channels + ch] * c.weights[base + x];
          out[outRow + xx * channels + ch] = clip8(ss);
        }
      }
    }
    return { width: outWidth, height: height, data: out };
  }

  function resampleVertical(image, outHeight, box0, box1, channels) {
    const { width, height, data } = image;
    const c = resampleWeights(height, outHeight, box0, box1);
    const out = new Uint8Array(width * outHeight * channels);
    const stride = width * channels;
    for (let yy = 0; yy < outHeight; yy++) {
      const y0 = c.first[yy], n = c.count[yy], base = yy * c.taps;
      for (let i = 0; i < stride; i++) {
        let ss = ONE / 2;
        for (let y = 0; y < n; y++) ss += data[(y0 + y) * stride + i] * c.weights[base + y];
        out[yy * stride + i] = clip8(ss);
      }
    }
    return { width: width, height: outHeight, data: out };
  }

  /* PIL's image.reduce((fx, fy)): the mean of each fx x fy block (partial blocks at the right and
   * bottom edges average what they have), rounded as Pillow's Reduce.c does. */
  function reduceImage(image, fx, fy, channels) {
    const { width, height, data } = image;
    const outW = Math.ceil(width / fx), outH = Math.ceil(height / fy);
    const out = new Uint8Array(outW * outH * channels);
    for (let yy = 0; yy < outH; yy++) {
      const y0 = yy * fy, y1 = Math.min(height, y0 + fy);
      for (let xx = 0; xx < outW; xx++) {
        const x0 = xx * fx, x1 = Math.min(width, x0 + fx);
        const n = (y1 - y0) * (x1 - x0);
        const multiplier = Math.floor(Math.pow(2, 24) / n), amend = Math.floor(n / 2);
        for (let ch = 0; ch < channels; ch++) {
          let ss = 0;
          for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) ss += data[(y * width + x) * channels + ch];
          out[(yy * outW + xx) * channels + ch] = Math.floor(((ss + amend) * multiplier) / Math.pow(2, 24));
        }
      }
    }
    return { width: outW, height: outH, data: out };
  }

  /* PIL's image.resize((w, h), BILINEAR[, reducing_gap]) of an RGB (channels 3) or L (1) image,
   * byte for byte where the aspect ratio is kept or square goes to square (all this pipeline
   * does). Pillow 13 runs the vertical pass first for some other changes of aspect (wider but
   * less tall, for one), which this does not copy: such a resize may differ by 1 in a few bytes. */
  function resize(image, outWidth, outHeight, reducingGap, channels) {
    channels = channels || 3;
    if (outWidth === image.width && outHeight === image.height) return image;
    let box = [0, 0, image.width, image.height];
    if (reducingGap) {
      const fx = Math.trunc(image.width / outWidth / reducingGap) || 1;
      const fy = Math.trunc(image.height / outHeight / reducingGap) || 1;
      if (fx > 1 || fy > 1) {
        // Pillow's _get_safe_box of the whole image is the whole image.
        image = reduceImage(image, fx, fy, channels);
        box = [0, 0, box[2] / fx, box[3] / fy];
      }
    }
    let out = image;
    if (outWidth !== image.width || box[0] !== 0 || box[2] !== image.width) {
      out = resampleHorizontal(out, outWidth, box[0], box[2], channels);
    }
    if (outHeight !== image.height || box[1] !== 0 || box[3] !== image.height) {
      out = resampleVertical(out, outHeight, box[1], box[3], channels);
    }
    return out;
  }

  // ---------------------------------------------------------------- detection (CenterFace)
  const STRIDE = 4, ALIGN = 32;
  const LANDMARKS = ["right_eye", "left_eye", "nose", "mouth_right", "mouth_left"];

  /* faces/base.py working_copy's arithmetic: the size of the copy the detector runs on, the factor
   * back to the photo, and the reducing gap of the resize (0: none). */
  function workingSize(width, height, maxSide, minSide) {
    const longest = Math.max(width, height);
    let factor, gap;
    if (minSide && longest < minSide) {
      factor = minSide / longest; gap = 0;
    } else if (!maxSide || longest <= maxSide) {
      return { width: width, height: height, scale: 1.0, gap: 0 };
    } else {
      factor = maxSide / longest; gap = 2.0;
    }
    return { width: Math.max(1, roundHalfEven(width * factor)), height: Math.max(1, roundHalfEven(height * factor)),
             scale: 1.0 / factor, gap: gap };
  }

  /* faces/base.py working_copy: the copy the detector runs on, and the factor back to the photo. */
  function workingCopy(image, maxSide, minSide) {
    const size = workingSize(image.width, image.height, maxSide, minSide);
    if (size.scale === 1.0) return { image: image, scale: 1.0 };
    return { image: resize(image, size.width, size.height, size.gap), scale: size.scale };
  }

  /* The pixels [x, x + w) x [y, y + h) of resize(image, fullWidth, fullHeight) without the rest of
   * it: the same weights, so the same bytes as that part of the whole resize (a reducing gap, which
   * only frames over twice the working side would take, is not copied). Only the rows the window's
   * filter reaches are resampled, which is what makes a detector window cheap. */
  function resizeWindow(image, fullWidth, fullHeight, x, y, w, h) {
    const { width, height, data } = image;
    const out = new Uint8Array(w * h * 3);
    if (fullWidth === width && fullHeight === height) {
      for (let j = 0; j < h; j++) out.set(data.subarray(((y + j) * width + x) * 3, ((y + j) * width + x + w) * 3), j * w * 3);
      return { width: w, height: h, data: out };
    }
    const cx = resampleWeights(width, fullWidth, 0, width), cy = resampleWeights(height, fullHeight, 0, height);
    let r0 = height, r1 = 0;
    for (let yy = y; yy < y + h; yy++) {
      r0 = Math.min(r0, cy.first[yy]);
      r1 = Math.max(r1, cy.first[yy] + cy.count[yy]);
    }
    const stride = w * 3, mid = new Uint8Array((r1 - r0) * stride);
    for (let r = r0; r < r1; r++) {
      const row = r * width * 3, outRow = (r - r0) * stride;
      for (let i = 0; i < w; i++) {
        const xx = x + i, x0 = cx.first[xx], n = cx.count[xx], base = xx * cx.taps;
        for (let ch = 0; ch < 3; ch++) {
          let ss = ONE / 2;
          for (let k = 0; k < n; k++) ss += data[row + (x0 + k) * 3 + ch] * cx.weights[base + k];
          mid[outRow + i * 3 + ch] = clip8(ss);
        }
      }
    }
    for (let j = 0; j < h; j++) {
      const yy = y + j, y0 = cy.first[yy] - r0, n = cy.count[yy], base = yy * cy.taps;
      for (let i = 0; i < stride; i++) {
        let ss = ONE / 2;
        for (let k = 0; k < n; k++) ss += mid[(y0 + k) * stride + i] * cy.weights[base + k];
        out[j * stride + i] = clip8(ss);
      }
    }
    return { width: w, height: h, data: out };
  }

  /* CenterFaceDetector.working_side. */
  function workingSide(detector, longest) {
    const keep = longest * Math.min(1.0, detector.reliable_face_px / detector.min_face);
    return Math.trunc(Math.min(longest, detector.max_side,
                               Math.max(Math.min(longest, detector.min_working_side), Math.ceil(keep))));
  }

  /* The detector's input: RGB planes, 0-255, padded at the bottom and right to multiples of 32. */
  function detectorInput(small) {
    const { width, height, data } = small;
    const ph = Math.ceil(height / ALIGN) * ALIGN, pw = Math.ceil(width / ALIGN) * ALIGN;
    const blob = new Float32Array(3 * ph * pw);
    const plane = ph * pw;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const s = (y * width + x) * 3, d = y * pw + x;
        blob[d] = data[s]; blob[plane + d] = data[s + 1]; blob[2 * plane + d] = data[s + 2];
      }
    }
    return { blob: blob, dims: [1, 3, ph, pw] };
  }

  /* CenterFaceDetector._decode: local maxima of the heat map above the threshold -> boxes
   * (x0, y0, x1, y1), scores and landmarks, in the working copy's pixels. */
  function decodeCenterFace(heat, logSize, offset, marks, gh, gw, threshold) {
    const plane = gh * gw;
    const found = [];
    for (let y = 0; y < gh; y++) {
      for (let x = 0; x < gw; x++) {
        const v = heat[y * gw + x];
        if (!(v >= threshold)) continue;
        let peak = true;
        for (let dy = -1; dy <= 1 && peak; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const yy = y + dy, xx = x + dx;
            if (yy < 0 || xx < 0 || yy >= gh || xx >= gw) continue;
            if (heat[yy * gw + xx] > v) { peak = false; break; }
          }
        }
        if (!peak) continue;
        const i = y * gw + x;
        const boxH = Math.exp(logSize[i]) * STRIDE, boxW = Math.exp(logSize[plane + i]) * STRIDE;
        const cx = (x + offset[plane + i] + 0.5) * STRIDE, cy = (y + offset[i] + 0.5) * STRIDE;
        const x0 = cx - boxW / 2, y0 = cy - boxH / 2;
        const points = [];
        for (let k = 0; k < 5; k++) {
          points.push([marks[(2 * k + 1) * plane + i] * boxW + x0, marks[2 * k * plane + i] * boxH + y0]);
        }
        found.push({ box: [x0, y0, x0 + boxW, y0 + boxH], score: v, points: points });
      }
    }
    return found;
  }

  function iouXyxy(a, b) {
    const areaA = Math.max(0, a[2] - a[0]) * Math.max(0, a[3] - a[1]);
    const areaB = Math.max(0, b[2] - b[0]) * Math.max(0, b[3] - b[1]);
    const iw = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
    const ih = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
    const inter = iw * ih, union = areaA + areaB - inter;
    return union > 0 ? inter / Math.max(union, 1e-12) : 0;
  }

  /* faces/base.py nms: greedy, best score first (ties keep their order). */
  function nms(found, threshold) {
    const order = found.map((f, i) => i).sort((a, b) => found[b].score - found[a].score || a - b);
    const suppressed = new Array(found.length).fill(false), keep = [];
    for (const i of order) {
      if (suppressed[i]) continue;
      keep.push(i);
      for (let j = 0; j < found.length; j++) if (iouXyxy(found[i].box, found[j].box) > threshold) suppressed[j] = true;
    }
    return keep.map((i) => found[i]);
  }

  /* faces/base.py make_face: photo pixels, clipped, rounded half up; null when nothing is left. */
  function makeFace(candidate, scale, width, height) {
    let [x0, y0, x1, y1] = candidate.box.map((v) => v * scale);
    x0 = Math.max(0, x0); y0 = Math.max(0, y0);
    x1 = Math.min(width, x1); y1 = Math.min(height, y1);
    const ix0 = Math.floor(x0 + 0.5), iy0 = Math.floor(y0 + 0.5);
    const w = Math.floor(x1 + 0.5) - ix0, h = Math.floor(y1 + 0.5) - iy0;
    if (w < 1 || h < 1) return null;
    const landmarks = {};
    LANDMARKS.forEach((name, k) => { landmarks[name] = [candidate.points[k][0] * scale, candidate.points[k][1] * scale]; });
    return { box: [ix0, iy0, w, h], score: Math.min(1, Math.max(0, candidate.score)), landmarks: landmarks };
  }

  // ---------------------------------------------------------------- detector windows (live frames)
  /* A live face is found again in a window around where it was in the last frame, as face trackers
   * do: a square about WINDOW_GROW times the face's side, cut from the detector's padded input of
   * the whole frame at the detector's own alignment. At the same scale and on the same 32-pixel grid
   * as the whole-frame search, the network sees the face's pixels as that search does and samples
   * them at the same places; only the context beyond the window is missing (measured: off the
   * grid, boxes moved by up to 5 px from the whole-frame ones). Pixels past the working copy are
   * the same zeros the whole frame is padded with. */
  const WINDOW_GROW = 3.0;

  function detectorWindow(face, work) {
    const [x, y, w, h] = face.box;
    const pw = Math.ceil(work.width / ALIGN) * ALIGN, ph = Math.ceil(work.height / ALIGN) * ALIGN;
    const side = Math.max(2 * ALIGN, Math.ceil(Math.max(w, h) * WINDOW_GROW / work.scale / ALIGN) * ALIGN);
    const ww = Math.min(side, pw), wh = Math.min(side, ph);
    const snap = (v, most) => Math.max(0, Math.min(most, Math.round(v / ALIGN) * ALIGN));
    return { x: snap((x + w / 2) / work.scale - ww / 2, pw - ww), y: snap((y + h / 2) / work.scale - wh / 2, ph - wh),
             width: ww, height: wh };
  }

  /* Candidates of one window, moved to working-copy pixels. A box that crosses a side of the window
   * (not an edge of the frame) belongs to a face the window only partly shows: the whole-frame
   * search finds it whole, so it is left to that. */
  function windowCandidates(found, win, work) {
    const TOLERANCE = 1;
    const inside = (box) =>
      (win.x === 0 || box[0] >= win.x - TOLERANCE) && (win.y === 0 || box[1] >= win.y - TOLERANCE) &&
      (win.x + win.width >= work.width || box[2] <= win.x + win.width + TOLERANCE) &&
      (win.y + win.height >= work.height || box[3] <= win.y + win.height + TOLERANCE);
    return found.map((f) => ({
      box: [f.box[0] + win.x, f.box[1] + win.y, f.box[2] + win.x, f.box[3] + win.y], score: f.score,
      points: f.points.map(([px, py]) => [px + win.x, py + win.y]),
    })).filter((f) => inside(f.box));
  }

  /* sort_largest_first: area, then score, then the box. */
  function largestFirst(faces) {
    return faces.slice().sort((a, b) => (b.box[2] * b.box[3] - a.box[2] * a.box[3]) || (b.score - a.score) ||
      a.box[0] - b.box[0] || a.box[1] - b.box[1] || a.box[2] - b.box[2] || a.box[3] - b.box[3]);
  }

  // ---------------------------------------------------------------- crops (faces/crop.py)
  const MIN_ROLL_DEGREES = 0.5;

  /* Least-squares similarity template -> landmarks: [scale, roll, origin x, origin y] or null. */
  function fitTemplate(face, template) {
    if (!face.landmarks) return null;
    const names = Object.keys(template).filter((n) => face.landmarks[n]);
    if (!(names.includes("left_eye") && names.includes("right_eye"))) return null;
    const n = names.length;
    let smx = 0, smy = 0, dmx = 0, dmy = 0;
    names.forEach((name) => {
      smx += template[name][0]; smy += template[name][1];
      dmx += face.landmarks[name][0]; dmy += face.landmarks[name][1];
    });
    smx /= n; smy /= n; dmx /= n; dmy /= n;
    // d ~ z * s in complex numbers: z = <s, d> / <s, s>.
    let re = 0, im = 0, norm = 0;
    names.forEach((name) => {
      const sx = template[name][0] - smx, sy = template[name][1] - smy;
      const dx = face.landmarks[name][0] - dmx, dy = face.landmarks[name][1] - dmy;
      re += sx * dx + sy * dy;
      im += sx * dy - sy * dx;
      norm += sx * sx + sy * sy;
    });
    norm = Math.max(norm, 1e-12);
    re /= norm; im /= norm;
    const scale = Math.hypot(re, im), roll = Math.atan2(im, re);
    if (!(scale > 0)) return null;
    const c = Math.cos(roll), s = Math.sin(roll);
    return [scale, roll, dmx - (c * smx - s * smy) * scale, dmy - (s * smx + c * smy) * scale];
  }

  function eyeRoll(face) {
    const lm = face.landmarks;
    if (!lm || !lm.left_eye || !lm.right_eye) return 0.0;
    return Math.atan2(lm.left_eye[1] - lm.right_eye[1], lm.left_eye[0] - lm.right_eye[0]);
  }

  /* crop_geometry: {side, m: [a, b, tx, c, d, ty]} mapping crop pixel (u, v) to the photo. */
  function cropGeometry(face, margin, align, template) {
    const halfUnits = 0.5 + margin;
    const fitted = align === "landmarks" ? fitTemplate(face, template) : null;
    let scale, roll, cx, cy;
    if (fitted) {
      [scale, roll, cx, cy] = fitted;
    } else {
      const [x, y, w, h] = face.box;
      scale = Math.max(w, h); cx = x + w / 2.0; cy = y + h / 2.0;
      roll = align === "eyes" || align === "landmarks" ? eyeRoll(face) : 0.0;
      if (Math.abs(roll * 180 / Math.PI) < MIN_ROLL_DEGREES) roll = 0.0;
    }
    const side = Math.max(1, roundHalfEven(scale * 2.0 * halfUnits));
    if (roll === 0.0 && !fitted) {
      const left = Math.floor(cx - side / 2.0 + 0.5), top = Math.floor(cy - side / 2.0 + 0.5);
      return { side: side, m: [1, 0, left, 0, 1, top] };
    }
    const k = (scale * 2.0 * halfUnits) / side;
    const cos = Math.cos(roll) * k, sin = Math.sin(roll) * k, half = side / 2.0;
    return { side: side, m: [cos, -sin, cx - cos * half + sin * half, sin, cos, cy - sin * half - cos * half] };
  }

  /* OpenCV's saturate_cast<int>(double): round half to even. */
  const cvRound = roundHalfEven;

  /* cut(): the crop, sampled as cv2.warpAffine(INTER_LINEAR, WARP_INVERSE_MAP, BORDER_REPLICATE)
   * does it: coordinates in 1/32 pixel, 15-bit weights, so the bytes match OpenCV's. */
  function cut(image, geometry) {
    const { width, height, data } = image;
    const side = geometry.side;
    const [a, b, left, c, d, top] = geometry.m;
    const out = new Uint8Array(side * side * 3);
    const pixel = (x, y, ch) => {
      x = x < 0 ? 0 : x >= width ? width - 1 : x;
      y = y < 0 ? 0 : y >= height ? height - 1 : y;
      return data[(y * width + x) * 3 + ch];
    };
    if (a === 1 && b === 0 && c === 0 && d === 1 && Number.isInteger(left) && Number.isInteger(top)) {
      for (let v = 0; v < side; v++) for (let u = 0; u < side; u++) for (let ch = 0; ch < 3; ch++) {
        out[(v * side + u) * 3 + ch] = pixel(left + u, top + v, ch);
      }
      return { width: side, height: side, data: out };
    }
    // Python hands OpenCV only the region under the square (corners - 2 px), in its coordinates.
    const xs = [left, a * side + left, b * side + left, a * side + b * side + left];
    const ys = [top, c * side + top, d * side + top, c * side + d * side + top];
    const x0 = Math.floor(Math.min(...xs)) - 2, y0 = Math.floor(Math.min(...ys)) - 2;
    const tx = left - x0, ty = top - y0;
    const AB = 1024, ROUND = 16;  // AB_BITS 10, INTER_BITS 5
    const adelta = new Int32Array(side), bdelta = new Int32Array(side);
    for (let u = 0; u < side; u++) { adelta[u] = cvRound(a * u * AB); bdelta[u] = cvRound(c * u * AB); }
    for (let v = 0; v < side; v++) {
      const X0 = cvRound((b * v + tx) * AB) + ROUND, Y0 = cvRound((d * v + ty) * AB) + ROUND;
      for (let u = 0; u < side; u++) {
        const X = (X0 + adelta[u]) >> 5, Y = (Y0 + bdelta[u]) >> 5;
        const ix = (X >> 5) + x0, iy = (Y >> 5) + y0, fx = X & 31, fy = Y & 31;
        const w00 = (32 - fx) * (32 - fy) * 32, w01 = fx * (32 - fy) * 32;
        const w10 = (32 - fx) * fy * 32, w11 = fx * fy * 32;
        for (let ch = 0; ch < 3; ch++) {
          const s = pixel(ix, iy, ch) * w00 + pixel(ix + 1, iy, ch) * w01 +
                    pixel(ix, iy + 1, ch) * w10 + pixel(ix + 1, iy + 1, ch) * w11;
          out[(v * side + u) * 3 + ch] = (s + 16384) >> 15;
        }
      }
    }
    return { width: side, height: side, data: out };
  }

  // ---------------------------------------------------------------- eval transform (transforms.py)
  /* A face crop (RGB) -> float32 (3, S, S): detail level, resize, grey or RGB, normalisation. */
  function modelInput(crop, pre, target, offset) {
    const size = pre.image_size;
    let image = crop;
    const level = pre.face_resolution;
    if (level && (image.width > level || image.height > level)) image = resize(image, level, level, 0);
    image = resize(image, size, size, 0);
    const plane = size * size;
    const inv = Math.fround(1.0 / 255.0);
    const mean = pre.mean.map(Math.fround), std = pre.std.map(Math.fround);
    const px = image.data;
    for (let i = 0; i < plane; i++) {
      const r = px[3 * i], g = px[3 * i + 1], b = px[3 * i + 2];
      if (pre.color_mode === "grayscale") {
        // PIL's convert("L"): ITU-R 601-2 luma in 16-bit fixed point.
        const grey = Math.fround((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
        const scaled = Math.fround(grey * inv);
        for (let ch = 0; ch < 3; ch++) target[offset + ch * plane + i] = Math.fround(scaled - mean[ch]) / std[ch];
      } else {
        const values = [r, g, b];
        for (let ch = 0; ch < 3; ch++) {
          target[offset + ch * plane + i] = Math.fround(Math.fround(values[ch] * inv) - mean[ch]) / std[ch];
        }
      }
    }
  }

  /* Mirror a (3, S, S) tensor left-right in place (TTA: the crop's mirror image). */
  function mirrorInto(source, sourceOffset, target, targetOffset, size) {
    for (let ch = 0; ch < 3; ch++) for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) {
      target[targetOffset + (ch * size + y) * size + x] = source[sourceOffset + (ch * size + y) * size + (size - 1 - x)];
    }
  }

  function softmax(logits, temperature) {
    const scaled = Array.from(logits, (v) => v / temperature);
    const top = Math.max(...scaled);
    const exp = scaled.map((v) => Math.exp(v - top));
    const total = exp.reduce((s, v) => s + v, 0);
    return exp.map((v) => v / total);
  }

  /* Faces (largest first) and their probability rows -> the /predict answer's JSON: the mirror of
   * inference/results.py ImageResult.to_dict (tests/test_browser_builders.py compares them). */
  function resultJson(faces, probs, classes, width, height, model, elapsedMs) {
    const out = faces.map((face, i) => {
      let top = 0;
      probs[i].forEach((p, k) => { if (p > probs[i][top]) top = k; });
      const probabilities = {};
      classes.forEach((name, k) => { probabilities[name] = roundTo(probs[i][k], 6); });
      return {
        box: { x: face.box[0], y: face.box[1], width: face.box[2], height: face.box[3] },
        score: roundTo(face.score, 4), emotion: classes[top], confidence: roundTo(probs[i][top], 4),
        probabilities: probabilities,
      };
    });
    return {
      emotion: out.length ? out[0].emotion : null, confidence: out.length ? out[0].confidence : null,
      faces: out, image: { width: width, height: height }, error: null, model: model, elapsed_ms: roundTo(elapsedMs, 1),
    };
  }

  // ---------------------------------------------------------------- the pipeline
  /* Everything between pixels and the answer that does not run a network: exposed for tests. */
  const steps = { roundHalfEven, resize, reduceImage, workingSize, workingCopy, resizeWindow, workingSide,
                  detectorInput, decodeCenterFace, detectorWindow, windowCandidates, nms, makeFace, largestFirst,
                  fitTemplate, cropGeometry, cut, modelInput, softmax, resultJson, rgbFromRgba };

  /* manifest: what GET /model-files/manifest.json answers (spec, detector settings, template,
   * file URLs). runDetector(blob, dims) and runClassifier(batch, dims) -> Promise of outputs. */
  class Pipeline {
    constructor(manifest, runDetector, runClassifier) {
      this.manifest = manifest;
      this.spec = manifest.model.spec;
      this.pre = this.spec.preprocess;
      this.classes = this.spec.classes;
      this.detector = manifest.detector;
      this.runDetector = runDetector;
      this.runClassifier = runClassifier;
    }

    async detect(image, times) {
      const d = this.detector;
      if (d.name === "none") return [{ box: [0, 0, image.width, image.height], score: 1.0, landmarks: null, whole: true }];
      const t = now();
      const side = workingSide(d, Math.max(image.width, image.height));
      const small = workingCopy(image, side, d.min_detection_side);
      const found = await this.candidates(small.image, times, "detector", t);
      const t2 = now();
      const faces = largestFirst(nms(found, d.nms_iou).map((f) => makeFace(f, small.scale, image.width, image.height))
        .filter(Boolean));
      addTime(times, "detector_decode", t2);
      return faces;
    }

    /* The size of the working copy the detector searches for `image` (workingSize), and its scale. */
    workOf(image) {
      const d = this.detector;
      return workingSize(image.width, image.height, workingSide(d, Math.max(image.width, image.height)),
                         d.min_detection_side);
    }

    /* The faces within windows of the working copy `work` (workOf, detectorWindow), each run through
     * the detector on its own; null when a window shows no face (its face is lost: search the whole
     * frame). */
    async detectWindows(image, windows, work, times) {
      const d = this.detector;
      let found = [];
      for (const win of windows) {
        const t = now();
        // The part of the window inside the working copy; detectorInput pads the rest with zeros.
        const pixels = resizeWindow(image, work.width, work.height, win.x, win.y,
                                    Math.min(win.width, work.width - win.x), Math.min(win.height, work.height - win.y));
        const mine = windowCandidates(await this.candidates(pixels, times, "detector_roi", t), win, work);
        if (!mine.length) return null;
        found = found.concat(mine);
      }
      const t = now();
      // Windows of faces side by side overlap: a face seen in two is one face.
      const faces = largestFirst(nms(found, d.nms_iou).map((f) => makeFace(f, work.scale, image.width, image.height))
        .filter(Boolean));
      addTime(times, "detector_decode", t);
      return faces;
    }

    /* Detector candidates in `pixels` (RGB, the scale the detector runs at), in its coordinates.
     * Times add up under detector_input (since `since`), `stage` (the network) and detector_decode. */
    async candidates(pixels, times, stage, since) {
      const input = detectorInput(pixels);
      let t = addTime(times, "detector_input", since);
      const out = await this.runDetector(input.blob, input.dims);
      t = addTime(times, stage, t);
      const found = decodeCenterFace(out.heat, out.logSize, out.offset, out.marks, input.dims[2] / STRIDE,
                                     input.dims[3] / STRIDE, this.detector.threshold);
      addTime(times, "detector_decode", t);
      return found;
    }

    /* image: RGB {width, height, data}; follower (optional, live frames): a FaceFollower, which
     * decides where to look for faces. Returns the /predict answer plus elapsed_ms and stage times. */
    async analyse(image, follower) {
      const start = now(), times = {};
      const faces = follower ? await follower.detect(this, image, times) : await this.detect(image, times);
      let t = now();
      const size = this.pre.image_size, per = 3 * size * size;
      const tta = !!this.manifest.tta;
      const count = faces.length;
      const batch = new Float32Array(per * count * (tta ? 2 : 1));
      faces.forEach((face, i) => {
        const crop = face.whole ? image : cut(image, cropGeometry(face, this.pre.face_margin, this.pre.face_align,
                                                                   this.manifest.face_template));
        modelInput(crop, this.pre, batch, i * per);
        if (tta) mirrorInto(batch, i * per, batch, (count + i) * per, size);
      });
      times.crops = now() - t;
      let probs = [];
      if (count) {
        t = now();
        const rows = tta ? 2 * count : count;
        const logits = await this.runClassifier(batch, [rows, 3, size, size]);
        times.classifier = now() - t;
        const n = this.classes.length;
        for (let i = 0; i < rows; i++) probs.push(softmax(logits.subarray(i * n, (i + 1) * n), this.spec.temperature));
        if (tta) probs = probs.slice(0, count).map((row, i) => row.map((p, k) => (p + probs[count + i][k]) / 2));
      }
      const result = resultJson(faces, probs, this.classes, image.width, image.height, this.spec.name, now() - start);
      result.stages_ms = times;  // where the time went, for the page's benchmarks
      return result;
    }
  }

  /* Where to look for faces in a live stream (webcam frames): around the faces of the last frame
   * (detector windows), and in the whole frame once every refreshS seconds (new faces), whenever a
   * window has lost its face, when no face was in view, and when the windows would together cost
   * about as much as the whole frame. The detector still runs on every frame, so every box and
   * landmark (and so every crop) is this frame's own. */
  class FaceFollower {
    constructor(options) {
      const o = options || {};
      this.refreshS = o.refreshS === undefined ? 1.0 : o.refreshS;
      this.reset();
    }

    reset() {
      this.faces = [];
      this.size = null;
      this.searchedAt = -Infinity;
      this.windows = 0;  // how many frames were searched in windows and how many whole: which search ran
      this.whole = 0;
    }

    async detect(pipeline, image, times) {
      const t = now() / 1000, size = image.width + "x" + image.height, d = pipeline.detector;
      let faces = null;
      if (d.name !== "none" && this.faces.length && size === this.size && t - this.searchedAt < this.refreshS) {
        const work = pipeline.workOf(image);
        const windows = this.faces.map((face) => detectorWindow(face, work));
        const area = windows.reduce((sum, w) => sum + w.width * w.height, 0);
        const whole = Math.ceil(work.width / ALIGN) * ALIGN * Math.ceil(work.height / ALIGN) * ALIGN;
        if (area < whole / 2) faces = await pipeline.detectWindows(image, windows, work, times);
      }
      if (faces === null) {
        faces = await pipeline.detect(image, times);
        this.searchedAt = t;
        this.whole += 1;
      } else {
        this.windows += 1;
      }
      this.faces = faces;
      this.size = size;
      return faces;
    }
  }

  /* Adds the time since `since` to times[name] (a frame may run a stage more than once); returns now. */
  function addTime(times, name, since) {
    const t = now();
    times[name] = (times[name] || 0) + t - since;
    return t;
  }

  function now() {
    return typeof performance !== "undefined" ? performance.now() : Date.now();
  }

  root.FaceOnDevice = { steps: steps, Pipeline: Pipeline, FaceFollower: FaceFollower };
  if (typeof module !== "undefined" && module.exports) module.exports = root.FaceOnDevice;
})(typeof window !== "undefined" ? window : globalThis);
