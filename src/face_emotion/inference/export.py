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

from face_emotion.errors import DatasetError, DatasetNotFoundError, FaceEmotionError, InvalidArgumentError
from face_emotion.inference.backends import OnnxRuntimeBackend, softmax
from face_emotion.models.files import (
    ONNX_INPUT_NAME,
    ONNX_OUTPUT_NAME,
    ONNX_QUANTIZATION_KEY,
    ONNX_SOURCE_SHA256_KEY,
    file_sha256,
    onnx_metadata,
    resolve_model,
)

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
        raise DatasetNotFoundError(f"calibration folder {folder} does not exist")
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
    int8 loses) and the last matrix product (the logits themselves). Keeping them raises top-1
    agreement with fp32 on real crops for a few kB more (figures in docs/default-model.md)."""
    import onnx

    nodes = onnx.load(str(onnx_path), load_external_data=False).graph.node
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    products = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
    return convs[:1] + products[-1:]


def quantize_int8(fp32_path: Path, output: Path, calibration: np.ndarray, work: Path,
                  fp32_nodes: Sequence[str] | None = None) -> str:
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


@dataclass
class _Calibration:
    """The calibration folder's images for int8: those calibrated on, and those held out to measure."""

    images: list[Image.Image]
    held_out: list[Image.Image]
    notes: list[str]


def _calibration_images(calibration_dir: str | Path, limit: int) -> _Calibration:
    found, unreadable = folder_images(calibration_dir, 2 * limit)
    if not found:
        raise DatasetError(f"no readable images in calibration folder {calibration_dir}")
    notes = [f"{unreadable} unreadable files in {calibration_dir} were skipped"] if unreadable else []
    if len(found) >= 16:
        # Calibrate on the first part, measure agreement on images calibration never saw.
        images = found[: min(limit, len(found) // 2)]
        return _Calibration(images, found[len(images):], notes)
    notes.append("fewer than 16 calibration images: int8 agreement is measured on the calibration images themselves")
    return _Calibration(found, found, notes)


class _Probabilities:
    """What the checks compare: a model's probabilities for a batch, from PyTorch or from a file."""

    def __init__(self, network, spec) -> None:
        from face_emotion.transforms import eval_transform

        self.network, self.spec = network, spec
        self.transform = eval_transform(spec.preprocess)
        self.size = int(spec.preprocess.image_size)
        self._sessions: dict[Path, OnnxRuntimeBackend] = {}

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, 3, self.size, self.size), np.float32)
        return np.stack([self.transform(image) for image in images]).astype(np.float32)

    def torch(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = np.concatenate([self.network(torch.from_numpy(b)).numpy() for b in _batches(batch, 16)])
        return softmax(logits, self.spec.temperature)

    def onnx(self, path: Path, batch: np.ndarray, num_threads: int | None) -> np.ndarray:
        if path not in self._sessions:
            self._sessions[path] = OnnxRuntimeBackend(path, num_threads=num_threads)
        backend = self._sessions[path]
        return softmax(np.concatenate([backend.run(b) for b in _batches(batch, 16)]), self.spec.temperature)


def _output_file(output: str | Path) -> Path:
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise InvalidArgumentError(f"--output {output}: the file name must end in .onnx")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidArgumentError(f"--output {output}: cannot create its folder ({error.strerror})") from None
    return output


def export_onnx(
    model_path: str | Path | None,
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
    """Export the model ``model_path`` names (models.files.resolve_model: a run folder, a
    .safetensors file, None or "bundled") to ``output`` (.onnx).

    The fp32 graph is checked against PyTorch on ``check_samples`` random normalised inputs and
    as many synthetic images, plus ``check_images`` and (for int8) calibration-folder images:
    ExportCheckError unless every probability agrees to FP32_TOLERANCE. With ``int8`` the file
    written is the quantised model, and its top-1 agreement with fp32 is measured on the image
    inputs (reported, not enforced: it depends on the calibration data). ``num_threads``: ONNX
    Runtime threads for the checks (None: every CPU available). ``fp32_nodes``: graph nodes the
    int8 model keeps in fp32 (None: the first convolution and the last matrix product).
    """
    from face_emotion.models.store import load_model

    started = time.perf_counter()
    source = resolve_model(model_path)
    output = _output_file(output)
    network, spec = load_model(source)
    source_sha256 = file_sha256(source)
    probs = _Probabilities(network, spec)
    calibration = (_calibration_images(calibration_dir, max_calibration_images) if int8 and calibration_dir is not None
                   else _Calibration([], [], []))
    notes = list(calibration.notes)
    # Image inputs: the caller's, synthetic ones, and calibration-folder images held out.
    images = _as_images(check_images) + synthetic_images(check_samples, seed=1) + calibration.held_out
    image_inputs = probs.preprocess(images)
    shape = (check_samples, 3, probs.size, probs.size)
    random_inputs = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    check_inputs = np.concatenate([random_inputs, image_inputs])

    with tempfile.TemporaryDirectory(prefix="face-emotion-export-") as tmp:
        work = Path(tmp)
        # Everything is written in the temporary folder and moved into place only once checked,
        # so a failed export never leaves a plausible-looking file behind.
        fp32_path = work / "model.fp32.onnx"
        _export_fp32(network, spec, fp32_path, opset)
        write_metadata(fp32_path, onnx_metadata(spec, source_sha256, "none"),
                       f"{spec.name}: face emotion classifier (logits)")
        fp32, fp32_diff = _check_fp32(probs, fp32_path, check_inputs, source, num_threads)
        fp32_bytes = fp32_path.stat().st_size
        final, quantization, made_from, agreement, int8_diff = fp32_path, "none", None, None, None
        if int8:
            final = work / "model.int8.onnx"
            quantization, made_from = _write_int8(source, source_sha256, spec, fp32_path, final, work, probs,
                                                  calibration, calibration_dir, fp32_nodes, num_threads, notes)
            int8_probs = probs.onnx(final, image_inputs, num_threads)
            fp32_images = fp32[len(random_inputs):]
            agreement = float((int8_probs.argmax(1) == fp32_images.argmax(1)).mean())
            int8_diff = float(np.abs(int8_probs - fp32_images).max())
        shutil.move(str(final), str(output))

    return ExportResult(
        output=output,
        opset=opset,
        int8=int8,
        quantization=quantization,
        calibration=made_from,
        fp32_max_abs_prob_diff=fp32_diff,
        fp32_check_inputs=len(check_inputs),
        int8_top1_agreement=agreement,
        int8_max_abs_prob_diff=int8_diff,
        int8_check_inputs=len(image_inputs) if int8 else None,
        source_bytes=source.stat().st_size,
        fp32_bytes=fp32_bytes,
        output_bytes=output.stat().st_size,
        seconds=round(time.perf_counter() - started, 2),
        notes=tuple(notes),
    )


def _check_fp32(probs: _Probabilities, fp32_path: Path, check_inputs: np.ndarray, source: Path,
                num_threads: int | None) -> tuple[np.ndarray, float]:
    """The fp32 file's probabilities and their largest difference to PyTorch's; ExportCheckError
    beyond FP32_TOLERANCE."""
    reference = probs.torch(check_inputs)
    fp32 = probs.onnx(fp32_path, check_inputs, num_threads)
    # Batch size 1 as well: the batch axis must really be dynamic.
    single = probs.onnx(fp32_path, check_inputs[:1], num_threads)
    fp32_diff = float(max(np.abs(fp32 - reference).max(), np.abs(single - reference[:1]).max()))
    if not fp32_diff <= FP32_TOLERANCE:
        raise ExportCheckError(
            f"the ONNX export of {source} does not reproduce PyTorch: max probability difference "
            f"{fp32_diff:.2e} > {FP32_TOLERANCE:.0e} over {len(check_inputs)} inputs"
        )
    return fp32, fp32_diff


def _write_int8(source: Path, source_sha256: str, spec, fp32_path: Path, final: Path, work: Path,
                probs: _Probabilities, calibration: _Calibration, calibration_dir, fp32_nodes, num_threads,
                notes: list[str]) -> tuple[str, str]:
    """Write the int8 model to ``final``: the one shipped beside the weights when no calibration
    folder is given and it was made from exactly these weights, else a fresh quantisation.
    Returns (how it was quantised, what it was calibrated on)."""
    shipped = shipped_int8(source, source_sha256) if not calibration.images else None
    if shipped is not None:
        shutil.copy(shipped, final)
        quantization = OnnxRuntimeBackend(final, num_threads=num_threads).metadata.get(ONNX_QUANTIZATION_KEY, "int8")
        return quantization, (f"shipped with the model ({shipped.name}, quantised on real face crops when it was "
                              f"packaged)")
    images = calibration.images
    if images:
        made_from = f"{len(images)} images from {calibration_dir}"
    else:
        images = synthetic_images(MAX_CALIBRATION_IMAGES // 2, seed=2)
        made_from = f"{len(images)} synthetic images (pass a folder of face crops for a better int8 model)"
        notes.append("int8 calibrated on synthetic images; real face crops give better activation ranges")
    quantization = quantize_int8(fp32_path, final, probs.preprocess(images), work, fp32_nodes)
    write_metadata(final, onnx_metadata(spec, source_sha256, quantization),
                   f"{spec.name}: face emotion classifier (logits), {quantization}")
    return quantization, made_from
