"""`face-emotion predict`: emotions of the faces in image and video files, as text, JSON lines or CSV.

One bad file never stops the run: it is reported (with "error" in JSON/CSV) and the rest go on.
Every rendering (text, JSON line, CSV rows, annotated copy) comes from the image's one
ImageResult (inference/results.py), as the web API's answers do.
Exit status: 0 when at least one image was read and analysed (with or without faces), 1 when
every image failed (or the model could not be loaded), 2 for usage errors. Scripts that need
every file to succeed should check the "error" fields.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from face_emotion.commands.common import fail as _fail
from face_emotion.inference.backends import backend_names
from face_emotion.video.analyse import DEFAULT_DETECT_INTERVAL_S
from face_emotion.video.smoothing import DEFAULT_SMOOTH_S

# Outputs are written as JPEG for JPEG inputs (a PNG of a 12-megapixel photo is ~20 MB), PNG otherwise.
_JPEG_SUFFIXES = {".jpg", ".jpeg", ".jfif", ".jpe"}


@dataclass
class _Input:
    path: Path
    name: Path  # name for --annotate: the file's name, or its path below the folder given


def collect_inputs(paths: tuple[Path, ...]) -> list[_Input]:
    """Files as given, and image and video files under folders (recursive, sorted); each file once."""
    from face_emotion.imageio import is_image_path
    from face_emotion.video.decode import is_video_path

    found: list[_Input] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and (is_image_path(p) or is_video_path(p)))
            items = [_Input(p, p.relative_to(path)) for p in files]
        else:
            # A file named explicitly is tried whatever its extension; a failure is reported for it.
            items = [_Input(path, Path(path.name))]
        for item in items:
            key = item.path.resolve()
            if key not in seen:
                seen.add(key)
                found.append(item)
    return found


def _annotation_path(out_dir: Path, name: Path, used: set[Path]) -> Path:
    suffix = ".jpg" if name.suffix.lower() in _JPEG_SUFFIXES else ".png"
    base = out_dir / name.with_suffix(suffix)
    candidate, counter = base, 2
    # Same names from different folders or arguments get -2, -3 ... rather than overwriting each
    # other; files from an earlier run are overwritten, so re-running does not pile up copies.
    while candidate in used:
        candidate = base.with_name(f"{base.stem}-{counter}{suffix}")
        counter += 1
    used.add(candidate)
    return candidate


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model_path", help="Run folder, .safetensors or .onnx file (default: the bundled model).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image per line on stdout.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Write one row per face (and one per image without faces or with an error) to this file; "
                   "- for stdout.")
@click.option("--no-detect", is_flag=True, help="Images are face crops already: each whole image is one face.")
@click.option("--detector", help="Face detector name (default: the package's default detector).")
@click.option("--annotate", "annotate_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write copies of the images with boxes and labels drawn into this folder.")
@click.option("--tta", is_flag=True, help="Average each face's probabilities with its mirror image's.")
@click.option("--backend", type=click.Choice(backend_names()),
              help="Inference backend (default: onnxruntime; pytorch runs the .safetensors file eagerly).")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads (default: every CPU available).")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Videos: write per-track summaries (JSON: {\"clips\": [...]}) to this file.")
@click.option("--timeline", "timeline_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Videos: plot each track's probabilities over time to this PNG (with several clips, "
                   "one file each, named FILE-<clip>.png).")
@click.option("--sample-fps", type=click.FloatRange(min=0, min_open=True),
              help="Videos: analyse at most this many frames a second (default: every frame).")
@click.option("--smooth", "smooth_s", type=click.FloatRange(min=0), default=DEFAULT_SMOOTH_S,
              show_default=True,
              help="Videos: time constant in seconds of each face's probability smoothing "
                   "(stops labels flickering between frames); 0 turns it off.")
@click.option("--detect-interval", "detect_interval_s", type=click.FloatRange(min=0),
              default=DEFAULT_DETECT_INTERVAL_S, show_default=True,
              help="Videos: seconds between face detections; faces are followed by optical flow in "
                   "between. 0: detect on every analysed frame.")
def predict(paths, model_path, as_json, csv_path, no_detect, detector, annotate_dir, tta, backend, threads,
            summary_path, timeline_path, sample_fps, smooth_s, detect_interval_s) -> None:
    """Emotions of the faces in PATHS (image or video files, or folders searched recursively).

    Videos (mp4, mov, mkv, webm, avi, ts): faces are tracked across frames and each keeps a
    track_id; --json prints one line per analysed frame, text output a summary per clip.

    Faces are listed largest first. A file that cannot be read is reported and the rest go on;
    the exit status is 1 only when every image failed.
    """
    from face_emotion.commands.predict_video import VideoOutputs, run_clip
    from face_emotion.imageio import IMAGE_EXTENSIONS
    from face_emotion.inference.pipeline import analyse_keeping_image
    from face_emotion.inference.predictor import WHOLE_IMAGE, Predictor
    from face_emotion.inference.results import csv_header, plural
    from face_emotion.video import VIDEO_EXTENSIONS, VideoOptions, is_video_path
    from face_emotion.video import csv_header as video_csv_header

    if as_json and csv_path is not None:
        _fail("--json and --csv are alternatives: choose one")
    if no_detect and detector not in (None, WHOLE_IMAGE):
        _fail("--no-detect and --detector are alternatives: choose one")
    inputs = collect_inputs(paths)
    if not inputs:
        _fail(f"no images or videos found in {', '.join(str(p) for p in paths)} "
              f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))})")
    clips = sum(1 for item in inputs if is_video_path(item.path))
    if clips:
        from face_emotion.errors import require_extra

        require_extra("video", f"analysing video ({plural(clips, 'clip')})")
    video_options = VideoOptions(sample_fps=sample_fps, detect_interval_s=detect_interval_s, smooth_s=smooth_s)
    predictor = Predictor.load(
        model_path, detector=WHOLE_IMAGE if no_detect else detector, backend=backend, tta=tta, num_threads=threads
    )

    csv_file = csv_writer = None
    try:
        if csv_path is not None:
            csv_file = sys.stdout if str(csv_path) == "-" else open(csv_path, "w", newline="", encoding="utf-8")
            csv_writer = csv.writer(csv_file)
            # With clips among the inputs, frame/time_s/track_id columns follow path (empty for images).
            csv_writer.writerow(video_csv_header(predictor.classes) if clips else csv_header(predictor.classes))
        if annotate_dir is not None:
            annotate_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _fail(f"cannot write {error.filename}: {error.strerror}")

    from tqdm import tqdm

    # The bar goes to stderr and only for several files; disable=None also hides it when stderr
    # is not a terminal (logs, CI). Results go to stdout through bar.write so lines stay whole.
    bar = tqdm(inputs, desc="images", unit="image", file=sys.stderr, disable=True if len(inputs) < 2 else None)
    succeeded = faces_total = face_frames = 0
    used_names: set[Path] = set()
    video_outputs = VideoOutputs(as_json=as_json, csv_writer=csv_writer, annotate_dir=annotate_dir,
                                 timeline=timeline_path, several_clips=clips > 1)
    try:
        for item in bar:
            if is_video_path(item.path):
                ok, faces = run_clip(predictor, item.path, item.name, video_options, video_outputs, used_names,
                                     lambda line: bar.write(line, file=sys.stdout))
                succeeded += ok
                face_frames += faces
                continue
            result, image = analyse_keeping_image(predictor, item.path, detect=not no_detect)
            if result.ok:
                succeeded += 1
                faces_total += len(result.faces)
            if csv_writer is not None:
                rows = result.csv_rows(predictor.classes)
                csv_writer.writerows([[row[0], "", "", "", *row[1:]] for row in rows] if clips else rows)
            else:
                # The result's own JSON (the web API's fields): the same JSON for the same image.
                lines = [json.dumps(result.to_dict(include_heatmap=False))] if as_json else result.text_lines()
                for line in lines:
                    bar.write(line, file=sys.stdout)
            if annotate_dir is not None and result.ok:
                target = _annotation_path(annotate_dir, item.name, used_names)
                target.parent.mkdir(parents=True, exist_ok=True)
                annotated = result.annotate(image)
                if target.suffix == ".jpg":
                    annotated.save(target, quality=92)
                else:
                    annotated.save(target)
    finally:
        bar.close()
        if csv_file is not None and csv_file is not sys.stdout:
            csv_file.close()

    if summary_path is not None:
        try:
            summary_path.write_text(json.dumps({"clips": video_outputs.summaries}, indent=1) + "\n", encoding="utf-8")
        except OSError as error:
            _fail(f"cannot write {summary_path}: {error.strerror}")
    failed = len(inputs) - succeeded
    where = f"; rows in {csv_path}" if csv_path is not None and str(csv_path) != "-" else ""
    # Faces in images and face-frames of clips are counted apart: one person on screen for 12 s
    # is 360 face-frames, not 360 faces.
    counts = [plural(len(inputs) - clips, "image"), plural(faces_total, "face")]
    if clips:
        counts = [plural(len(inputs) - clips, "image"), plural(clips, "video"), plural(faces_total, "face"),
                  plural(face_frames, "face-frame")]
    click.echo(f"{', '.join(counts)}, {plural(failed, 'error')}{where}", err=True)
    if succeeded == 0:
        raise click.exceptions.Exit(1)
