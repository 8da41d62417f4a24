/* Saving what the page shows: a photo's result or a clip's analysis as JSON (the API's own
 * answer) or CSV (the columns of `face-emotion predict --csv`: inference/results.py csv_header,
 * and video/results.py's with frame, time_s and track_id after path), so a file saved from the
 * page reads like one the command line writes. No dependencies. */
"use strict";

(function () {
  function csvCell(value) {
    if (value === null || value === undefined) return "";
    const text = String(value);
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function csvText(rows) {
    return rows.map((row) => row.map(csvCell).join(",")).join("\r\n") + "\r\n";
  }

  function round(value, digits) {
    const k = Math.pow(10, digits);
    return Math.round(value * k) / k;
  }

  function classesOf(faces, classes) {
    if (classes && classes.length) return classes;
    return faces.length ? Object.keys(faces[0].probabilities) : [];
  }

  /* One image result (the /predict answer) -> rows under the image header: one per face,
   * numbered from 1, else one row that says "no face" or "error". */
  function imageRows(result, classes, path) {
    const blank = new Array(8 + classes.length).fill("");
    if (result.error) return [[path, ...blank, "error", result.error.message]];
    const faces = result.faces || [];
    if (faces.length === 0) return [[path, ...blank, "no face", ""]];
    return faces.map((face, i) => [path, i + 1, face.box.x, face.box.y, face.box.width, face.box.height,
      round(face.score, 4), face.emotion, round(face.confidence, 6),
      ...classes.map((name) => round(face.probabilities[name], 6)), "ok", ""]);
  }

  function imageHeader(classes) {
    return ["path", "face", "x", "y", "width", "height", "score", "emotion", "confidence", ...classes,
            "status", "error"];
  }

  function imageCsv(result, classes, path) {
    const names = classesOf(result.faces || [], classes);
    return csvText([imageHeader(names), ...imageRows(result, names, path || "")]);
  }

  /* A clip's analysis (the /predict/video answer) -> one row per face per analysed frame. */
  function videoCsv(analysis, path) {
    const classes = analysis.classes;
    const [first, ...rest] = imageHeader(classes);
    const rows = [[first, "frame", "time_s", "track_id", ...rest]];
    analysis.frames.forEach((frame) => {
      const faces = frame.faces || [];
      imageRows(frame, classes, path || "").forEach((row, i) => {
        const id = faces[i] && faces[i].track_id !== null && faces[i].track_id !== undefined ? faces[i].track_id : "";
        rows.push([row[0], frame.frame, round(frame.time_s, 4), id, ...row.slice(1)]);
      });
    });
    return csvText(rows);
  }

  function save(blob, name) {
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    // Revoked later: Chromium reads the blob after click() returns.
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function saveJson(data, name) {
    save(new Blob([JSON.stringify(data, null, 2) + "\n"], { type: "application/json" }), name);
  }

  function saveCsv(text, name) {
    save(new Blob([text], { type: "text/csv" }), name);
  }

  /* "holiday.jpg" -> "holiday" (the base of a download's name). */
  function stem(name, fallback) {
    const base = String(name || "").replace(/^.*[\\/]/, "").replace(/\.[^.]*$/, "");
    return base || fallback;
  }

  window.FaceDownloads = { imageCsv, videoCsv, save, saveJson, saveCsv, stem, csvText };
})();
