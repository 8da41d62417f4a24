"""A training pack: a crop bank, its labels, splits, soft labels and teacher logits in one file.

Why: a lent GPU machine starts bare, cannot reach the data, and takes 64 MB with it. The pack is
what training reads after detection and decoding - every view of every file, already cut - so a
GPU spends its minutes on training, not on CenterFace over 45,000 files.

Format: one ``.npz`` (numpy's zip of arrays, read with ``allow_pickle=False``: no code in it).
Views are stored many to one image, tiles stacked in a column: one header per few hundred views
instead of one per view. Template views are JPEG, each tile a multiple of 8 pixels high so no
8x8 block straddles two views; a "given" view (the file as it is) is stored as its core, in
WebP (see write_pack), and its context - the core's edge pixels repeated - rebuilt on reading.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from face_emotion.data.crop_bank import GIVEN, TEMPLATE, CropBank
from face_emotion.data.scan import SPLITS, Sample
from face_emotion.errors import DatasetError
from face_emotion.faces.base import Face

PACK_FORMAT = "face-emotion-pack-1"
TILES_PER_MOSAIC = 256


@dataclass
class TrainingPack:
    """What `train --bank` needs: the bank, the samples by split, and per-sample tables."""

    bank: CropBank
    classes: list[str]
    splits: dict[str, list[Sample]]
    soft_labels: dict[str, np.ndarray]  # digest -> class distribution (where known)
    teacher_logits: dict[str, np.ndarray]  # digest -> a teacher's logits (where known)
    meta: dict  # preprocess fields, context, what the pack was made from


def pack_side(detail: int, zoom_out: float) -> int:
    """Stored side: the detail level widened by ``zoom_out``, down to a multiple of 8 pixels (so
    the zoom-out a pack allows can be a little less than asked: 1.17 for 1.2 at 48 px)."""
    return max(int(detail * max(zoom_out, 1.0) // 8 * 8), detail)


def _encode(tiles: np.ndarray, fmt: str, quality: int) -> list[bytes]:
    out = []
    per = TILES_PER_MOSAIC if fmt == "JPEG" else max(1, min(TILES_PER_MOSAIC, 16383 // max(tiles.shape[1], 1)))
    for start in range(0, len(tiles), per):
        block = tiles[start : start + per]
        mosaic = block.reshape(-1, *block.shape[2:])
        buffer = io.BytesIO()
        if fmt == "JPEG":
            Image.fromarray(mosaic).save(buffer, "JPEG", quality=quality, optimize=True, progressive=True)
        else:
            Image.fromarray(mosaic).save(buffer, "WEBP", quality=quality, method=6)
        out.append(buffer.getvalue())
    return out


def _decode(chunks: Sequence[bytes], count: int, side: int, channels: int) -> np.ndarray:
    shape = (count, side, side) if channels == 1 else (count, side, side, channels)
    pixels = np.empty(shape, np.uint8)
    done = 0
    for chunk in chunks:
        with Image.open(io.BytesIO(chunk)) as image:
            mosaic = np.asarray(image.convert("L" if channels == 1 else "RGB"))
        n = mosaic.shape[0] // side
        pixels[done : done + n] = mosaic.reshape(n, side, side, *mosaic.shape[2:])
        done += n
    if done != count:
        raise DatasetError(f"training pack: {done} views decoded, {count} expected")
    return pixels


def _bytes_array(chunks: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0] + [len(c) for c in chunks]).astype(np.int64)
    return np.frombuffer(b"".join(chunks), np.uint8) if chunks else np.zeros(0, np.uint8), offsets


def _chunks(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    raw = data.tobytes()
    return [raw[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def write_pack(
    path: str | Path,
    bank: CropBank,
    splits: dict[str, list[Sample]],
    classes: list[str],
    *,
    soft_labels: dict[str, np.ndarray] | None = None,
    teacher_logits: dict[str, np.ndarray] | None = None,
    meta: dict | None = None,
    quality: int = 65,
    given_quality: int = 80,
    rebuild: dict[str, Face] | None = None,
) -> Path:
    """Write ``bank`` (views of ``bank.samples``) with the split, labels and tables of each sample.

    Template views are JPEG (``quality``): cut from larger files, they lose little. Given views
    are WebP (``given_quality``): a 48 px dataset crop that is JPEG already loses more to a
    second JPEG than to WebP at the same size (bundled model on the test split's given crops:
    0.795 from the files, 0.753 from JPEG 70, 0.784 from WebP 90).

    ``rebuild``: samples (digest -> detected face) whose file is its own given core (a 48 px
    dataset crop at a 48 px detail level): their template view is not stored but cut again on
    reading from the given core and the face, by the same function that cut it (crop_bank.
    template_view), which halves what such a file costs. The pack's ``meta`` must then hold the
    ``preprocess`` fields.
    """
    from face_emotion.data.crop_bank import lookup

    side = bank.pixels.shape[1]
    core = int(round(side * bank.core_fraction))
    pad = (side - core) // 2
    if core % 8 or side % 8:
        raise DatasetError(f"training pack: views of {side} px with a {core} px core; both must be multiples of 8")
    split_of = {s.digest: i for i, name in enumerate(SPLITS) for s in splits.get(name, [])}
    used = sorted({int(i) for i in bank.sample_index if bank.samples[int(i)].digest in split_of})
    renumber = {old: new for new, old in enumerate(used)}
    keep = np.array([int(i) in renumber for i in bank.sample_index], bool)
    kinds = bank.kind[keep]
    owners = np.array([renumber[int(i)] for i in bank.sample_index[keep]], np.int64)
    pixels = bank.pixels[keep]
    samples = [bank.samples[i] for i in used]
    sources = sorted({s.source for s in samples})
    n_classes = len(classes)

    def table(rows: dict | None) -> np.ndarray:
        out = np.full((len(samples), n_classes), np.nan, np.float32)
        for i, s in enumerate(samples):
            row = lookup(rows, s.digest) if rows else None
            if row is not None:
                out[i] = row
        return out.astype(np.float16)

    rebuild = rebuild or {}
    rebuilt = np.array([k == TEMPLATE and samples[o].digest in rebuild for o, k in zip(owners, kinds)], bool)
    names = sorted({n for f in rebuild.values() for n in (f.landmarks or {})})
    faces = np.full((int(rebuilt.sum()), 4 + 2 * len(names)), np.nan, np.float32)
    for row, owner in enumerate(owners[rebuilt]):
        face = rebuild[samples[owner].digest]
        faces[row, :4] = face.box_xywh
        for j, name in enumerate(names):
            if face.landmarks and name in face.landmarks:
                faces[row, 4 + 2 * j : 6 + 2 * j] = face.landmarks[name]
    template_chunks = _encode(pixels[(kinds == TEMPLATE) & ~rebuilt], "JPEG", quality)
    given_chunks = _encode(pixels[kinds == GIVEN][:, pad : pad + core, pad : pad + core], "WEBP", given_quality)
    t_data, t_offsets = _bytes_array(template_chunks)
    g_data, g_offsets = _bytes_array(given_chunks)
    header = {
        "format": PACK_FORMAT,
        "side": side,
        "core": core,
        "channels": 1 if pixels.ndim == 3 else pixels.shape[3],
        "quality": quality,
        "given_quality": given_quality,
        "n_template": int(((kinds == TEMPLATE) & ~rebuilt).sum()),
        "landmark_names": names,
        "n_given": int((kinds == GIVEN).sum()),
        **(meta or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez(
            handle,
            header=np.array(json.dumps(header)),
            classes=np.array(classes),
            sources=np.array(sources),
            digest=np.array([np.frombuffer(bytes.fromhex(s.digest), np.uint8) for s in samples]).reshape(-1, 32),
            label=np.array([classes.index(s.label) for s in samples], np.int16),
            source=np.array([sources.index(s.source) for s in samples], np.int16),
            split=np.array([split_of[s.digest] for s in samples], np.int8),
            view_owner=owners.astype(np.int32),
            view_kind=kinds.astype(np.int8),
            view_rebuilt=rebuilt,
            rebuild_faces=faces,
            template_jpeg=t_data,
            template_offsets=t_offsets,
            given_jpeg=g_data,
            given_offsets=g_offsets,
            soft_labels=table(soft_labels),
            teacher_logits=table(teacher_logits),
        )
    return path


def _open(path: Path):
    """The pack's arrays (lazily) and its header; DatasetError for anything else."""
    not_a_pack = f"{path} is not a training pack (face-emotion pack writes one)"
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        raise DatasetError(not_a_pack) from None
    if not hasattr(data, "files") or "header" not in data.files:
        raise DatasetError(not_a_pack)
    try:
        header = json.loads(str(data["header"]))
    except (ValueError, TypeError):
        raise DatasetError(not_a_pack) from None
    if not isinstance(header, dict) or header.get("format") != PACK_FORMAT:
        raise DatasetError(f"{path}: not a pack this version reads ({PACK_FORMAT})")
    return data, header


def pack_header(path: str | Path) -> dict:
    """The pack's header alone (a quick check before anything slow)."""
    data, header = _open(Path(path))
    data.close()
    return header


def read_pack(path: str | Path) -> TrainingPack:
    """The pack at ``path`` as a bank and tables (views decoded, given views padded back)."""
    data, header = _open(Path(path))
    with data:
        side, core, channels = header["side"], header["core"], header["channels"]
        classes = [str(c) for c in data["classes"]]
        sources = [str(s) for s in data["sources"]]
        digests = [bytes(d).hex() for d in data["digest"]]
        samples = [
            Sample(Path(sources[src]) / d[:12], classes[lab], sources[src], d)
            for d, lab, src in zip(digests, data["label"].tolist(), data["source"].tolist())
        ]
        kinds = data["view_kind"]
        owners = data["view_owner"]
        template = _decode(
            _chunks(data["template_jpeg"], data["template_offsets"]), header["n_template"], side, channels
        )
        given_core = _decode(_chunks(data["given_jpeg"], data["given_offsets"]), header["n_given"], core, channels)
        pad = (side - core) // 2
        widths = ((0, 0), (pad, side - core - pad), (pad, side - core - pad)) + (((0, 0),) if channels > 1 else ())
        pixels = np.empty((len(kinds), side, side) + ((channels,) if channels > 1 else ()), np.uint8)
        rebuilt = data["view_rebuilt"] if "view_rebuilt" in data.files else np.zeros(len(kinds), bool)
        pixels[(kinds == TEMPLATE) & ~rebuilt] = template
        pixels[kinds == GIVEN] = np.pad(given_core, widths, mode="edge")
        if rebuilt.any():
            _rebuild_templates(pixels, owners, kinds, rebuilt, given_core, data["rebuild_faces"], header)
        split_codes = data["split"].tolist()
        soft, teacher = data["soft_labels"].astype(np.float32), data["teacher_logits"].astype(np.float32)
    splits = {name: [s for s, code in zip(samples, split_codes) if code == i] for i, name in enumerate(SPLITS)}
    bank = CropBank(pixels, owners.astype(np.int64), kinds.astype(np.int8), core / side, samples, {})

    def rows(table: np.ndarray) -> dict[str, np.ndarray]:
        return {d: table[i] for i, d in enumerate(digests) if np.isfinite(table[i]).all()}

    return TrainingPack(bank, classes, splits, rows(soft), rows(teacher), header)


def _rebuild_templates(pixels: np.ndarray, owners: np.ndarray, kinds: np.ndarray, rebuilt: np.ndarray,
                       given_core: np.ndarray, faces: np.ndarray, header: dict) -> None:
    """Cut the template views that were not stored from their samples' given cores (in place)."""
    from face_emotion.data.crop_bank import template_view
    from face_emotion.models.spec import PreprocessSpec

    made = header["preprocess"]
    preprocess = PreprocessSpec(image_size=made["image_size"], color_mode=made["color_mode"],
                                face_margin=made["face_margin"], face_align=made["face_align"],
                                face_resolution=made["face_resolution"])
    context = (header["side"] / header["core"] - 1.0) / 2.0
    given_of = {int(o): i for i, o in enumerate(owners[kinds == GIVEN])}
    names = header["landmark_names"]
    for row, view in enumerate(np.flatnonzero(rebuilt)):
        values = faces[row]
        landmarks = {n: (float(values[4 + 2 * j]), float(values[5 + 2 * j])) for j, n in enumerate(names)
                     if np.isfinite(values[4 + 2 * j])}
        face = Face(tuple(int(v) for v in values[:4]), 1.0, landmarks or None)
        core = Image.fromarray(given_core[given_of[int(owners[view])]])
        pixels[view] = template_view(core, face, preprocess, context)
