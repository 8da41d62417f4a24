"""Export a model to ONNX (fp32, optionally int8) and prove the file computes what PyTorch does.

The ONNX file is self-describing like the safetensors one: ``metadata_props`` carries the
ModelSpec JSON (architecture, classes, preprocessing, temperature), so the ONNX Runtime backend
needs nothing else. The graph outputs *logits*; temperature and softmax stay in the Predictor, the
one place every backend shares.

Exporter: the TorchScript-based exporter (``dynamo=False``). torch 2.14's default dynamo exporter
needs the extra `onnxscript` package, cannot write opset 17 (it emits 18, and converting ResNet
down to 17 fails in onnx's axes-input adapter), takes ~5x longer, and fails outright in
torch.export on efficientnet_lite0, the only backbone with pretrained weights here. The
TorchScript exporter handles all three backbones; it is deprecated, so this choice is re-checked
when torch is upgraded (the parity check below fails loudly if an upgrade changes the result).

int8: ONNX Runtime static quantisation, QDQ format, per-channel int8 weights, uint8 activations,
MinMax calibration. ``reduce_range`` (7-bit weights) because CPUs without VNNI (AVX2, like these
machines) saturate in the u8 x s8 multiply otherwise. Calibration wants real face crops
(``calibration_dir``); without them smooth synthetic images stand in, and the result says so.
If static quantisation fails, dynamic quantisation (weights only) is the fallback.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from face_emotion.errors import FaceEmotionError
from face_emotion.inference.backends import (
    ONNX_CLASSES_KEY,
    ONNX_INPUT_NAME,
    ONNX_OUTPUT_NAME,
    ONNX_PREPROCESS_KEY,
    ONNX_QUANTIZATION_KEY,
    ONNX_SOURCE_SHA256_KEY,
    ONNX_SPEC_KEY,
    OnnxRuntimeBackend,
    file_sha256,
)
from face_emotion.inference.predictor import softmax

log = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-4  # max |p_onnx - p_torch| over all classes and check inputs
MAX_CALIBRATION_IMAGES = 64
# A model may ship its int8 form beside its weights, quantised on real face crops when it was
# packaged (the bundled model does: its training crops cannot ship, so their ranges come this way).
SHIPPED_INT8_FILE = "model.int8.onnx"
CALIBRATION_BATCH = 8


class ExportCheckError(FaceEmotionError, RuntimeError):
    """The exported file does not reproduce the PyTorch model."""

    code = "export_check_failed"


@dataclass(frozen=True)
class ExportResult:
    output: Path
    opset: int
    int8: bool
    quantization: str  # "none", or how the int8 weights were made
    calibration: str | None  # what the int8 model was calibrated on
    fp32_max_abs_prob_diff: float  # ONNX Runtime fp32 vs PyTorch, over fp32_check_inputs
    fp32_check_inputs: int
    int8_top1_agreement: float | None  # share of int8_check_inputs where int8 and fp32 agree
    int8_max_abs_prob_diff: float | None
    int8_check_inputs: int | None
    source_bytes: int
    fp32_bytes: int
    output_bytes: int
    seconds: float
    format: str = "onnx"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["output"] = str(self.output)
        data["notes"] = list(self.notes)
        return data


# --------------------------------------------------------------------------- inputs for checks


def synthetic_images(count: int, *, seed: int = 0, size: int = 96) -> list[Image.Image]:
    """Smooth colour images (blurred noise plus a gradient): closer to photo statistics than
    white noise, which matters for calibration ranges. Deterministic."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = rng.uniform(0, 255, size=(6, 6, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        ramp = np.linspace(-40, 40, size, dtype=np.float32)[None, :, None] * rng.uniform(-1, 1)
        noise = rng.normal(0, 6, size=(size, size, 3))
        images.append(Image.fromarray(np.clip(smooth + ramp + noise, 0, 255).astype(np.uint8)))
    return images


def folder_images(folder: str | Path, limit: int) -> tuple[list[Image.Image], int]:
    """Up to ``limit`` images under ``folder`` (sorted, recursive) and the count of unreadable ones."""
    from face_emotion.imageio import ImageDecodeError, is_image_path, load_image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder {folder} does not exist")
    images, unreadable = [], 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p)):
        if len(images) >= limit:
            break
        try:
            images.append(load_image(path))
        except ImageDecodeError:
            unreadable += 1
    return images, unreadable


def _as_images(items: Iterable[Image.Image | str | Path]) -> list[Image.Image]:
    from face_emotion.imageio import load_image

    return [item.convert("RGB") if isinstance(item, Image.Image) else load_image(item) for item in items]


def _batches(array: np.ndarray, size: int) -> Iterable[np.ndarray]:
    for start in range(0, len(array), size):
        yield array[start : start + size]


# --------------------------------------------------------------------------- export


def _metadata(spec, source_sha256: str, quantization: str) -> dict[str, str]:
    return {
        ONNX_SPEC_KEY: spec.to_json(),
        ONNX_CLASSES_KEY: json.dumps(list(spec.classes)),
        ONNX_PREPROCESS_KEY: json.dumps(asdict(spec.preprocess), sort_keys=True),
        ONNX_SOURCE_SHA256_KEY: source_sha256,
        ONNX_QUANTIZATION_KEY: quantization,
    }


def write_metadata(path: Path, properties: dict[str, str], doc: str) -> None:
    """Replace the file's metadata_props (quantisation tools do not reliably carry them over)."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, properties)
    model.producer_name = "face-emotion"
    model.doc_string = doc
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _export_fp32(network, spec, path: Path, opset: int) -> None:
    import torch

    size = int(spec.preprocess.image_size)
    example = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        # The exporter warns that it is the legacy path (see the module docstring) and traces.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (example,),
            str(path),
            dynamo=False,
            input_names=[ONNX_INPUT_NAME],
            output_names=[ONNX_OUTPUT_NAME],
            dynamic_axes={ONNX_INPUT_NAME: {0: "batch"}, ONNX_OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )


def default_fp32_nodes(onnx_path: Path) -> list[str]:
    """Nodes kept in fp32 by default: the first convolution (it sees raw pixels, whose fine steps
    int8 loses) and the last matrix product (the logits themselves). Measured on the bundled
    model's real crops: top-1 agreement with fp32 rose from 95.6 % to 95.8 % (v2) and 93.4 % to
    95.2 % (the GPU check's EfficientNet-Lite0) for a few kB more."""
    import onnx

    nodes = onnx.load(str(onnx_path), load_external_data=False).graph.node
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    products = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
    return convs[:1] + products[-1:]


def _quantize(fp32_path: Path, output: Path, calibration: np.ndarray, work: Path, fp32_nodes: Sequence[str] | None = None) -> str:
    """Write the int8 model; return how it was made. ``fp32_nodes``: nodes left unquantised
    (None: :func:`default_fp32_nodes`)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, batch: np.ndarray) -> None:
            self._iterator = iter(_batches(batch, CALIBRATION_BATCH))

        def get_next(self):
            chunk = next(self._iterator, None)
            return None if chunk is None else {ONNX_INPUT_NAME: np.ascontiguousarray(chunk)}

    prepared = work / "prepared.onnx"
    try:
        # Shape inference + graph fusions first, as ONNX Runtime recommends before quantising.
        quant_pre_process(str(fp32_path), str(prepared))
    except Exception as error:  # a model the pre-processor cannot handle still quantises raw
        log.warning("quantisation pre-processing failed (%s); quantising the raw graph", error)
        prepared = fp32_path
    keep = list(default_fp32_nodes(prepared) if fp32_nodes is None else fp32_nodes)
    try:
        quantize_static(
            str(prepared),
            str(output),
            Reader(calibration),
            nodes_to_exclude=keep,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return (f"static int8 (QDQ, per-channel s8 weights with reduce_range, u8 activations, MinMax on "
                f"{len(calibration)} inputs; {len(keep)} nodes kept in fp32: {', '.join(keep)})")
    except Exception as error:
        log.warning("static quantisation failed (%s); falling back to dynamic quantisation", error)
        quantize_dynamic(str(prepared), str(output), per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)
        return f"dynamic int8 (weights only, per-channel; static quantisation failed: {error.__class__.__name__})"


def shipped_int8(source: Path, source_sha256: str) -> Path | None:
    """The int8 file shipped beside ``source``, if it was quantised from exactly these weights."""
    candidate = source.parent / SHIPPED_INT8_FILE
    if not candidate.is_file():
        return None
    try:
        made_from = OnnxRuntimeBackend(candidate, num_threads=1).metadata.get(ONNX_SOURCE_SHA256_KEY)
    except Exception as error:  # a damaged file must not stop an export that can quantise anew
        log.warning("ignoring %s: %s", candidate, error)
        return None
    return candidate if made_from == source_sha256 else None


def export_onnx(
    model_path: str | Path,
    output: str | Path,
    *,
    int8: bool = False,
    opset: int = 17,
    check_samples: int = 16,
    check_images: Sequence[Image.Image | str | Path] = (),
    calibration_dir: str | Path | None = None,
    num_threads: int | None = None,
    fp32_nodes: Sequence[str] | None = None,
    max_calibration_images: int = MAX_CALIBRATION_IMAGES,
) -> ExportResult:
    """Export the model at ``model_path`` (run folder or .safetensors) to ``output`` (.onnx).

    The fp32 graph is checked against PyTorch on ``check_samples`` random normalised inputs and
    as many synthetic images, plus ``check_images`` and (for int8) calibration-folder images:
    ExportCheckError unless every probability agrees to FP32_TOLERANCE. With ``int8`` the file
    written is the quantised model, and its top-1 agreement with fp32 is measured on the image
    inputs (reported, not enforced: it depends on the calibration data). ``num_threads``: ONNX
    Runtime threads for the checks (None: every CPU available). ``fp32_nodes``: graph nodes the
    int8 model keeps in fp32 (None: the first convolution and the last matrix product).
    """
    import torch

    from face_emotion.models.store import load_model, resolve_model_path
    from face_emotion.transforms import eval_transform

    started = time.perf_counter()
    source = resolve_model_path(model_path)
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise ValueError(f"--output {output}: the file name must end in .onnx")
    output.parent.mkdir(parents=True, exist_ok=True)
    network, spec = load_model(source)
    source_sha256 = file_sha256(source)
    transform = eval_transform(spec.preprocess)
    size = int(spec.preprocess.image_size)
    notes: list[str] = []

    def preprocess(images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, 3, size, size), np.float32)
        return np.stack([transform(image) for image in images]).astype(np.float32)

    def torch_probs(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = np.concatenate([network(torch.from_numpy(b)).numpy() for b in _batches(batch, 16)])
        return softmax(logits, spec.temperature)

    def onnx_probs(backend: OnnxRuntimeBackend, batch: np.ndarray) -> np.ndarray:
        return softmax(np.concatenate([backend.run(b) for b in _batches(batch, 16)]), spec.temperature)

    # Image inputs: user samples, then calibration-folder images, else synthetic ones.
    images = _as_images(check_images) + synthetic_images(check_samples, seed=1)
    calibration_images: list[Image.Image] = []
    held_out: list[Image.Image] = []
    if int8 and calibration_dir is not None:
        found, unreadable = folder_images(calibration_dir, 2 * max_calibration_images)
        if not found:
            raise ValueError(f"no readable images in calibration folder {calibration_dir}")
        if unreadable:
            notes.append(f"{unreadable} unreadable files in {calibration_dir} were skipped")
        if len(found) >= 16:
            # Calibrate on the first part, measure agreement on images calibration never saw.
            calibration_images = found[: min(max_calibration_images, len(found) // 2)]
            held_out = found[len(calibration_images):]
        else:
            calibration_images = held_out = found
            notes.append("fewer than 16 calibration images: int8 agreement is measured on the calibration images themselves")
    random_inputs = np.random.default_rng(0).standard_normal((check_samples, 3, size, size)).astype(np.float32)
    image_inputs = preprocess(images + held_out)

    with tempfile.TemporaryDirectory(prefix="face-emotion-export-") as tmp:
        work = Path(tmp)
        # Everything is written in the temporary folder and moved into place only once checked,
        # so a failed export never leaves a plausible-looking file behind.
        fp32_path = work / "model.fp32.onnx"
        final = fp32_path
        _export_fp32(network, spec, fp32_path, opset)
        write_metadata(fp32_path, _metadata(spec, source_sha256, "none"), f"{spec.name}: face emotion classifier (logits)")
        fp32_backend = OnnxRuntimeBackend(fp32_path, num_threads=num_threads)

        check_inputs = np.concatenate([random_inputs, image_inputs])
        reference = torch_probs(check_inputs)
        fp32 = onnx_probs(fp32_backend, check_inputs)
        # Batch size 1 as well: the batch axis must really be dynamic.
        single = onnx_probs(fp32_backend, check_inputs[:1])
        fp32_diff = float(max(np.abs(fp32 - reference).max(), np.abs(single - reference[:1]).max()))
        if not fp32_diff <= FP32_TOLERANCE:
            raise ExportCheckError(
                f"the ONNX export of {source} does not reproduce PyTorch: max probability difference "
                f"{fp32_diff:.2e} > {FP32_TOLERANCE:.0e} over {len(check_inputs)} inputs"
            )
        fp32_bytes = fp32_path.stat().st_size

        quantization, calibration, agreement, int8_diff, int8_count = "none", None, None, None, None
        shipped = shipped_int8(source, source_sha256) if int8 and not calibration_images else None
        if shipped is not None:
            final = work / "model.int8.onnx"
            shutil.copy(shipped, final)
            quantization = OnnxRuntimeBackend(final, num_threads=num_threads).metadata.get(ONNX_QUANTIZATION_KEY, "int8")
            calibration = f"shipped with the model ({shipped.name}, quantised on real face crops when it was packaged)"
        elif int8:
            if calibration_images:
                calibration = f"{len(calibration_images)} images from {calibration_dir}"
            else:
                calibration_images = synthetic_images(MAX_CALIBRATION_IMAGES // 2, seed=2)
                calibration = f"{len(calibration_images)} synthetic images (pass a folder of face crops for a better int8 model)"
                notes.append("int8 calibrated on synthetic images; real face crops give better activation ranges")
            final = work / "model.int8.onnx"
            quantization = _quantize(fp32_path, final, preprocess(calibration_images), work, fp32_nodes)
            write_metadata(
                final, _metadata(spec, source_sha256, quantization), f"{spec.name}: face emotion classifier (logits), {quantization}"
            )
        if int8:
            int8_probs = onnx_probs(OnnxRuntimeBackend(final, num_threads=num_threads), image_inputs)
            fp32_images = fp32[len(random_inputs):]
            agreement = float((int8_probs.argmax(1) == fp32_images.argmax(1)).mean())
            int8_diff = float(np.abs(int8_probs - fp32_images).max())
            int8_count = len(image_inputs)
        shutil.move(str(final), str(output))

    return ExportResult(
        output=output,
        opset=opset,
        int8=int8,
        quantization=quantization,
        calibration=calibration,
        fp32_max_abs_prob_diff=fp32_diff,
        fp32_check_inputs=len(check_inputs),
        int8_top1_agreement=agreement,
        int8_max_abs_prob_diff=int8_diff,
        int8_check_inputs=int8_count,
        source_bytes=source.stat().st_size,
        fp32_bytes=fp32_bytes,
        output_bytes=output.stat().st_size,
        seconds=round(time.perf_counter() - started, 2),
        notes=tuple(notes),
    )
