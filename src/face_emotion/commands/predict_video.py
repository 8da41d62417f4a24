"""The video half of `face-emotion predict`: one clip -> JSON lines per frame, CSV rows, an
annotated copy, a summary and a timeline. Argument parsing stays in commands/predict.py."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class VideoOutputs:
    """Where the results of the clips of one run go (None: not asked for)."""

    as_json: bool = False
    csv_writer: object = None
    annotate_dir: Path | None = None
    timeline: Path | None = None
    several_clips: bool = False  # timelines get the clip's name added
    summaries: list = field(default_factory=list)  # one dict per clip, for --summary


def annotated_clip_path(out_dir: Path, name: Path, used: set[Path]) -> Path:
    base = out_dir / name.with_suffix(".mp4")
    candidate, counter = base, 2
    while candidate in used:
        candidate = base.with_name(f"{base.stem}-{counter}.mp4")
        counter += 1
    used.add(candidate)
    return candidate


def timeline_path(target: Path, clip: Path, several: bool) -> Path:
    return target.with_name(f"{target.stem}-{clip.stem}{target.suffix or '.png'}") if several else target


def run_clip(predictor, path: Path, name: Path, options, outputs: VideoOutputs, used: set[Path],
             write) -> tuple[bool, int]:
    """Analyse one clip and write its outputs; ``write(line)`` prints a line on stdout.

    Returns (succeeded, faces seen in analysed frames). A clip that cannot be read, or is damaged
    part-way, is reported (JSON/CSV "error", text line) and leaves no annotated file behind.
    """
    from PIL import Image
    from tqdm import tqdm

    from face_emotion.errors import UnreadableFileError
    from face_emotion.video import VideoDecodeError, open_clip
    from face_emotion.video.annotate import AnnotatedVideoWriter, draw_frame

    classes = predictor.classes
    writer = None
    faces_seen = 0
    try:
        with open_clip(predictor, path, options, path=str(path)) as clip:
            info = clip.info
            if outputs.annotate_dir is not None:
                target = annotated_clip_path(outputs.annotate_dir, name, used)
                writer = AnnotatedVideoWriter(target, info.width, info.height, info.fps)
            # Over frames, on stderr, and only on a terminal (disable=None), as for images.
            bar = tqdm(total=info.frames, desc=path.name, unit="frame", file=sys.stderr, leave=False, disable=None)
            latest = None
            try:
                for item in clip:
                    bar.update(1)
                    if item.result is not None:
                        latest = item.result
                        faces_seen += len(latest.faces)
                        if outputs.as_json:
                            write(json.dumps(latest.to_dict()))
                        if outputs.csv_writer is not None:
                            outputs.csv_writer.writerows(latest.csv_rows(classes))
                    if writer is not None:
                        # Frames that --sample-fps skips show the latest analysed frame's boxes.
                        image = draw_frame(Image.fromarray(item.decoded.rgb), latest)
                        writer.write(np.asarray(image), item.decoded.time_s)
            finally:
                bar.close()
        if writer is not None:
            writer.close()
            writer = None
    except VideoDecodeError as error:
        _report_error(path, error.code, str(error), outputs, write, classes, predictor)
        return False, faces_seen
    except OSError as error:
        _report_error(path, UnreadableFileError.code, UnreadableFileError.of(error).message, outputs, write,
                      classes, predictor)
        return False, faces_seen
    finally:
        if writer is not None:
            writer.abort()
    summary = clip.summary()
    outputs.summaries.append(summary.to_dict())
    if outputs.timeline is not None:
        from face_emotion.video.timeline import plot_timeline

        plot_timeline(clip.builder.series, classes, timeline_path(outputs.timeline, path, outputs.several_clips),
                      title=str(path))
    if not outputs.as_json and outputs.csv_writer is None:
        for line in summary_lines(summary):
            write(line)
    return True, faces_seen


def _report_error(path, code, message, outputs, write, classes, predictor) -> None:
    """A clip's error in the shape images use (ImageResult.failed), with frame and time_s null."""
    from face_emotion.inference.results import ImageResult
    from face_emotion.video.results import FrameResult, error_rows

    failed = ImageResult.failed(code, message, path=str(path), model=str(predictor.spec.name))
    outputs.summaries.append({"path": str(path), "error": failed.error.to_dict()})
    if outputs.csv_writer is not None:
        outputs.csv_writer.writerows(error_rows(str(path), code, message, classes))
    elif outputs.as_json:
        write(json.dumps(FrameResult.failed_dict(failed)))
    else:
        write(*failed.text_lines())


def summary_lines(summary) -> list[str]:
    """For people: the clip, then one line per track."""
    head = f"{summary.path}: {summary.frames_analysed} frames analysed over {summary.duration_s:.1f} s"
    if not summary.tracks:
        return [f"{head}, no face found"]
    lines = [f"{head}, {len(summary.tracks)} face track{'s' if len(summary.tracks) != 1 else ''}; "
             f"mostly {summary.dominant_emotion}"]
    for track in summary.tracks:
        share = track.share[track.dominant_emotion]
        lines.append(f"  face {track.track_id} from {track.first_s:.1f} s to {track.last_s:.1f} s "
                     f"({track.frames} frames): {track.dominant_emotion} {share:.0%} of the time")
    return lines
