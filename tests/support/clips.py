"""Clips made for the video tests and benchmarks: real faces (skimage's astronaut) moving over a plain background.

Encoded with PyAV's libx264 into MP4, the same path the project's own annotated clips take.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

# The astronaut's face in skimage.data.astronaut() (512x512), with a little hair and chin.
FACE_BOX = (150, 30, 290, 200)  # left, top, right, bottom


def astronaut_face(height: int = 100) -> Image.Image:
    from skimage import data

    face = Image.fromarray(data.astronaut()).crop(FACE_BOX)
    return face.resize((round(face.width * height / face.height), height), Image.Resampling.LANCZOS)


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 25, codec: str = "libx264") -> Path:
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w", options={"movflags": "+faststart"} if path.suffix == ".mp4" else {}) as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def render(size: tuple[int, int], count: int, placements: Callable[[int], list[tuple[Image.Image, int, int]]],
           background=(96, 110, 120)) -> list[np.ndarray]:
    """``count`` frames; placements(i) lists (face image, left, top) pasted in order (later on top)."""
    frames = []
    for i in range(count):
        canvas = Image.new("RGB", size, background)
        for face, left, top in placements(i):
            canvas.paste(face, (left, top))
        frames.append(np.asarray(canvas))
    return frames


def moving_face_clip(path: Path, count: int = 50, fps: int = 25) -> tuple[Path, list[tuple[int, int, int, int]]]:
    """The astronaut's face gliding left to right; returns the clip and the true box of each frame."""
    face = astronaut_face(100)
    size = (400, 240)
    xs = np.linspace(20, size[0] - face.width - 20, count).round().astype(int)
    ys = (70 + 30 * np.sin(np.linspace(0, np.pi, count))).round().astype(int)
    frames = render(size, count, lambda i: [(face, int(xs[i]), int(ys[i]))])
    return write_clip(path, frames, fps), [(int(x), int(y), face.width, face.height) for x, y in zip(xs, ys)]


def crossing_faces_clip(path: Path, count: int = 75, fps: int = 25) -> Path:
    """Two faces crossing paths: A (upper) left to right, B (lower, mirrored) right to left.

    They overlap in the middle of the clip, B drawn over A. Both are the same person, so only
    motion can tell them apart: exactly the case where a tracker swaps ids if it is going to.
    """
    face_a = astronaut_face(90)
    face_b = face_a.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    size = (480, 270)
    left, right = 20, size[0] - face_a.width - 20
    xa = np.linspace(left, right, count).round().astype(int)
    xb = np.linspace(right, left, count).round().astype(int)
    frames = render(size, count, lambda i: [(face_a, int(xa[i]), 40), (face_b, int(xb[i]), 110)])
    return write_clip(path, frames, fps)


def blank_clip(path: Path, count: int = 20, fps: int = 25) -> Path:
    """No face: a drifting grey gradient."""
    ramp = np.linspace(40, 200, 320)[None, :, None]
    frames = [np.broadcast_to(np.roll(ramp, 8 * i, axis=1), (180, 320, 3)).astype(np.uint8).copy()
              for i in range(count)]
    return write_clip(path, frames, fps)


def audio_only_file(path: Path, seconds: float = 1.0) -> Path:
    """An .m4a-like MP4 with one AAC audio stream and no video."""
    import av

    rate = 16000
    with av.open(str(path), mode="w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        samples = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
        frame_size = 1024
        for start in range(0, len(samples) - frame_size, frame_size):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + frame_size], format="flt", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def fake_camera_clip(path: Path, width: int = 640, height: int = 480, frames: int = 90) -> Path:
    """A YUV4MPEG2 clip (what Chromium's fake camera plays: --use-file-for-fake-video-capture): the
    astronaut's head moving left and right."""
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    head = astronaut.crop((130, 0, 330, 240)).resize((160, 192))
    rng = np.random.default_rng(0)
    background = Image.fromarray(rng.uniform(60, 200, (6, 8, 3)).astype(np.uint8)).resize((width, height),
                                                                                         Image.Resampling.BICUBIC)
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            frame = background.copy()
            x = int((width - head.width) * (0.5 + 0.4 * np.sin(2 * np.pi * i / frames)))
            frame.paste(head, (x, (height - head.height) // 2))
            ycbcr = np.asarray(frame.convert("YCbCr"))
            y = ycbcr[..., 0]
            cb = ycbcr[..., 1].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8)
            cr = ycbcr[..., 2].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8)
            out.write(b"FRAME\n" + y.tobytes() + cb.tobytes() + cr.tobytes())
    return path


def default_detector_available() -> bool:
    """Whether the default face detector (CenterFace, whose model file ships in the package) can be built here."""
    try:
        from face_emotion.faces.centerface_detector import default_model_path

        default_model_path()
        return True
    except ImportError:
        return False
