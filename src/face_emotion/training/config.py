"""The settings of a training run and their defaults: the one home the CLI's help reads them from."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from face_emotion.errors import InvalidArgumentError
from face_emotion.models.files import BUNDLED, WEIGHTS_FILE, ModelLoadError
from face_emotion.models.spec import PreprocessSpec

# Fine-tuning a face-emotion model (--init) on a small set - a user's own people, a camera -
# is another job than training on tens of thousands of faces: the start is already good, so the
# features must move slowly (a tenth of the head's learning rate, pulled back towards where they
# started by L2-SP), the few photos all train (no test split carved; validation picks the epoch)
# in small batches (steps, not epochs, are what a hundred photos lack), and the result must never
# be worse than the start on validation. These replace the options the user left at their
# defaults (scripts/adaptation_proxy.py measures them).
ADAPT_MAX_IMAGES = 3000
ADAPT_DEFAULTS = {
    "lr": 1e-3, "backbone_lr_ratio": 0.1, "l2sp": 0.01, "epochs": 20, "batch_size": 16, "patience": 100,
    "schedule": "cosine", "val_fraction": 0.2, "test_fraction": 0.0, "keep_start": True, "keep_classes": True,
}


@dataclass
class TrainConfig:
    data_dirs: list[str]
    out_dir: str
    classes: list[str] | None = None
    arch: str | None = None  # None: the --init model's architecture, else resnet50
    weights: str = "imagenet"  # "imagenet", "none" or a path
    image_size: int | None = None  # None: the --init model's, else 224
    color_mode: str | None = None  # None: the --init model's colour mode, else "rgb"
    dropout: float = 0.5
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    balance: str = "none"  # "none", "loss" (class-weighted loss), "sqrt" (weights by
    # inverse square-root frequency) or "sampler" (balanced batches)
    augment: str = "default"  # "default", "light" or "none"
    head_epochs: int = 0  # > 0: train only the head this many epochs first
    patience: int = 6  # early stopping on validation macro-F1
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    devices: int | str = "auto"
    accelerator: str = "auto"
    num_nodes: int = 1
    precision: str | None = None  # None: bf16-mixed on a CUDA GPU, else 32-true
    num_workers: int = 0
    resume: bool = False
    checkpoint_minutes: float = 10.0
    max_time_minutes: float | None = None
    limit_train_batches: float | int | None = None
    progress: bool = True
    name: str = "face-emotion"
    # Crop geometry (faces.crop) and detail level (PreprocessSpec.face_resolution). None: the
    # --init model's, else margin 0, landmarks, no detail step. A model started from another must
    # see its crops cut the way it learnt them.
    face_margin: float | None = None
    face_align: str | None = None
    face_resolution: int | None = None
    # "memory": every crop decoded once into a bank held on the training device and augmented
    # there a batch at a time (data.crop_bank, data.augment); "files": decoded per sample.
    crops: str = "memory"
    # Which framings to train on when detecting: "template" (the detector's crop, as predict and
    # serve cut it), "given" (the file as it is, as --no-detect reads it) or "both". "both" is for
    # datasets of face crops, which users also hand over as they are; a whole photo is no crop.
    framings: str = "template"
    zoom_out: float = 1.15  # augmentation may show up to this times the crop's side ("memory")
    distill: str | None = None  # CSV of teacher logits by sha256 prefix (data.crop_bank.read_digest_table)
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    soft_labels: str | None = None  # CSV of per-file class distributions (e.g. annotator votes)
    schedule: str = "plateau"  # "plateau" (reduce on validation loss) or "cosine" (fixed budget)
    init: str | None = None  # start from a face-emotion model: "bundled", a run folder or a model file
    bank: str | None = None  # a training pack (data.pack, `face-emotion pack`) instead of data_dirs
    backbone_lr_ratio: float = 1.0  # the backbone's learning rate as a fraction of the head's
    l2sp: float = 0.0  # strength of the pull back towards the starting weights (with --init)
    keep_start: bool = False  # with --init: keep the start if it scores higher on validation
    keep_classes: bool = False  # with --init and no --classes, data of known classes only: the others stay
    adapt: str = "auto"  # "auto": ADAPT_DEFAULTS when fine-tuning a model on a small set; "off"
    detect: bool = True  # detect and crop faces first (uncropped photos); False: files are face crops
    detector: str | None = None  # face detector name; None: the default
    extra: dict = field(default_factory=dict)  # free-form notes written into the model description

    def __post_init__(self) -> None:
        init_spec = None
        if self.init:
            from face_emotion.models.store import read_spec

            _check_init(self.init)
            init_spec = read_spec(self.init)  # "bundled", a run folder or a model file (models.files)
        # Everything that shapes a crop follows the model a run starts from unless given.
        if self.arch is None:
            self.arch = init_spec.architecture if init_spec else "resnet50"
        if init_spec is not None:
            pre = init_spec.preprocess
            for name in ("image_size", "color_mode", "face_margin", "face_align", "face_resolution"):
                if getattr(self, name) is None:
                    setattr(self, name, getattr(pre, name))
        fresh = PreprocessSpec()  # the one home of a fresh run's crop defaults
        for name in ("image_size", "color_mode", "face_margin", "face_align"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(fresh, name))
        if self.precision is None:
            self.precision = "bf16-mixed" if cuda_in_use(self.accelerator) else "32-true"
        if self.crops not in ("memory", "files"):
            raise InvalidArgumentError(f"crops must be memory or files, not {self.crops!r}")
        if self.framings not in ("template", "given", "both"):
            raise InvalidArgumentError(f"framings must be template, given or both, not {self.framings!r}")
        if (self.distill or self.soft_labels) and self.crops != "memory":
            raise InvalidArgumentError("--distill and --soft-labels need --crops memory")
        if self.adapt not in ("auto", "off"):
            raise InvalidArgumentError(f"adapt must be auto or off, not {self.adapt!r}")


def settle_adaptation(config: TrainConfig, n_images: int) -> bool:
    """Apply ADAPT_DEFAULTS to the options left at their defaults when ``config`` fine-tunes a
    face-emotion model on ``n_images`` <= ADAPT_MAX_IMAGES. Returns whether it did."""
    if config.adapt == "off" or not config.init or n_images > ADAPT_MAX_IMAGES:
        return False
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    for name, value in ADAPT_DEFAULTS.items():
        if getattr(config, name) == defaults[name]:
            setattr(config, name, value)
    return True


def _check_init(init: str) -> None:
    """A missing --init is told in --init's words: the model layer's own message asks for --model."""
    path = Path(init)
    if str(init) == BUNDLED or path.is_file() or (path / WEIGHTS_FILE).is_file():
        return
    what = f"has no {WEIGHTS_FILE}" if path.is_dir() else "does not exist"
    raise ModelLoadError(f"--init {init}: {what}; --init takes `bundled`, a run folder written by "
                         f"`face-emotion train`, or its {WEIGHTS_FILE}")


def cuda_in_use(accelerator: str) -> bool:
    import torch

    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
