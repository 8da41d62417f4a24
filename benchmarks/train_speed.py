"""Training speed of `face-emotion train`'s two data paths, in seconds per epoch, on this machine.

Both paths run the project's own DataModules, LightningModule and Trainer on the same generated
face-crop folder (48 px grey JPEGs, as FER2013's):
- files:  each crop decoded and augmented per sample by PIL/torchvision in a DataLoader;
- memory: every crop decoded once into a CropBank held on the training device, augmented there
          a whole batch at a time (data.augment).
The first epoch of each path is never timed: it holds one-off costs (cuDNN autotuning on a GPU,
the bank's move to the device, allocator warm-up). On a CUDA GPU the memory path runs bf16 and
channels-last, as `train` does there.

    python benchmarks/train_speed.py                       # CPU here; CUDA when there is one
    python benchmarks/train_speed.py --images 45000 --batch 512 --epochs 3 --paths memory
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="generated crops (default: %(default)s)")
    parser.add_argument("--arch", default="efficientnet_lite0", help="network (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=80, help="model input (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs per path, the first untimed (default: %(default)s)")
    parser.add_argument("--paths", default="files,memory", help="data paths to time (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1,
                        help="DataLoader workers of the files path (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return parser.parse_args(argv)


def make_crops(root: Path, n: int, classes: list[str]) -> None:
    """Face-like 48 px grey crops: a bright oval, eyes and a mouth whose curve depends on the class."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    for i in range(n):
        label = classes[i % len(classes)]
        image = Image.new("L", (48, 48), int(rng.integers(20, 80)))
        draw = ImageDraw.Draw(image)
        draw.ellipse((8, 4, 40, 46), fill=int(rng.integers(140, 220)))
        for x in (17, 31):
            draw.ellipse((x - 3, 18, x + 3, 22), fill=30)
        open_mouth = 1 + 2 * classes.index(label)  # a mouth from a line to a wide oval, by class
        draw.ellipse((16, 32 - open_mouth // 2, 32, 33 + open_mouth // 2), outline=40, width=2)
        noisy = np.clip(np.asarray(image, np.int16) + rng.integers(-12, 12, (48, 48)), 0, 255).astype(np.uint8)
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(folder / f"{i:06d}.jpg", quality=85)


def epoch_clock():
    """A Lightning callback recording the wall seconds of every training epoch (validation excluded)."""
    import pytorch_lightning as pl
    import torch

    class EpochClock(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self._start)

    return EpochClock()


def time_path(path: str, root: Path, args) -> dict:
    import pytorch_lightning as pl
    import torch

    from face_emotion.data.crop_bank import build_crop_bank
    from face_emotion.data.datamodule import CropBankDataModule, FaceDataModule
    from face_emotion.data.scan import scan_dataset, stratified_split
    from face_emotion.models.backbones import create_network, get_backbone
    from face_emotion.models.spec import PreprocessSpec
    from face_emotion.training.module import EmotionClassifier

    cuda = torch.cuda.is_available()
    backbone = get_backbone(args.arch)
    preprocess = PreprocessSpec(image_size=args.image_size, color_mode="grayscale", mean=backbone.mean,
                                std=backbone.std, face_resolution=48)
    scan = scan_dataset([root], workers=1)
    splits = stratified_split(scan.samples, val_fraction=0.05, test_fraction=0.0, seed=0)
    built = time.perf_counter()
    if path == "memory":
        bank, _ = build_crop_bank(scan.samples, preprocess, detect=False, given=True)
        dtype = torch.bfloat16 if cuda else torch.float32
        datamodule = CropBankDataModule(bank, splits, scan.classes, preprocess, batch_size=args.batch,
                                        precision_dtype=dtype)
    else:
        datamodule = FaceDataModule(splits, scan.classes, preprocess, batch_size=args.batch, num_workers=args.workers)
    built = time.perf_counter() - built
    network = create_network(args.arch, len(scan.classes), dropout=0.3, weights="none")
    if cuda:
        network = network.to(memory_format=torch.channels_last)
    module = EmotionClassifier(network, len(scan.classes), lr=1e-3, schedule="cosine")
    clock = epoch_clock()
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator="gpu" if cuda else "cpu", devices=1,
        precision="bf16-mixed" if cuda and path == "memory" else "32-true", callbacks=[clock], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0,
    )
    trainer.fit(module, datamodule=datamodule)
    timed = clock.seconds[1:]
    per_epoch = sum(timed) / len(timed) if timed else float("nan")
    n_train = len(splits["train"])
    return {"path": path, "first_epoch_s": clock.seconds[0], "epoch_s": per_epoch,
            "images_per_s": n_train / per_epoch, "prepare_s": built, "train_images": n_train}


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    from face_emotion.cache import cache_path

    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu
    print(f"torch {torch.__version__}, {device}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"{args.arch} at {args.image_size} px, batch {args.batch}, {args.images} generated crops, "
          f"{args.epochs} epochs per path (the first untimed)")
    try:
        load = os.getloadavg()
        print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other work slows every row)")
    except OSError:
        pass
    classes = ["anger", "happiness", "neutral", "sadness", "surprise"]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FACE_EMOTION_CACHE"] = str(Path(tmp) / "cache")  # a cold bank, not this machine's cache
        assert cache_path("crop-banks").parent == Path(tmp) / "cache"
        root = Path(tmp) / "crops"
        make_crops(root, args.images, classes)
        rows = [time_path(p.strip(), root, args) for p in args.paths.split(",") if p.strip()]
    header = f"{'path':<8}{'prepare s':>11}{'epoch 1 s':>11}{'epoch s':>9}{'img/s':>9}{'x files':>9}"
    print(header)
    print("-" * len(header))
    base = next((r for r in rows if r["path"] == "files"), rows[0])
    for row in rows:
        print(f"{row['path']:<8}{row['prepare_s']:>11.1f}{row['first_epoch_s']:>11.1f}{row['epoch_s']:>9.2f}"
              f"{row['images_per_s']:>9.0f}{row['images_per_s'] / base['images_per_s']:>9.2f}", flush=True)
    print("epoch s: mean of the epochs after the first; x files: throughput relative to the files path, same run.")


if __name__ == "__main__":
    main()
