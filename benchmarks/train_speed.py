"""Training throughput on this machine's CPU: images per second for one optimiser step.

One step is what `face-emotion train` does per batch: forward, cross-entropy, backward and an
AdamW step, in fp32, on the same networks (face_emotion.models.backbones, with the emotion head).
Random inputs: decoding and augmentation are not timed, so this is the upper bound the network
allows. Use it to choose --arch and --image-size before a long CPU run.

    python benchmarks/train_speed.py                                # resnet50, resnet18, efficientnet_lite0
    python benchmarks/train_speed.py --archs resnet50 --sizes 48,96 --steps 5 --batch 64
"""

from __future__ import annotations

import argparse
import os
import platform
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="resnet50,resnet18,efficientnet_lite0",
                        help="comma-separated architectures (default: %(default)s)")
    parser.add_argument("--sizes", default="48,64,96,112,224", help="comma-separated image sizes (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: %(default)s)")
    parser.add_argument("--budget", type=float, default=150.0,
                        help="seconds for the whole table: later rows are listed as not timed once it is "
                             "spent (default: %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=20.0,
                        help="stop timing a configuration after this long, keeping at least one timed step "
                             "(default: %(default)s)")
    parser.add_argument("--classes", type=int, default=7, help="size of the emotion head (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return parser.parse_args(argv)


def time_configuration(arch: str, size: int, args) -> dict:
    import torch
    import torch.nn.functional as F

    from face_emotion.models.backbones import create_network

    torch.manual_seed(0)
    network = create_network(arch, args.classes, dropout=0.5, weights=None).train()
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-4)
    images = torch.randn(args.batch, 3, size, size)
    targets = torch.randint(0, args.classes, (args.batch,))

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss = F.cross_entropy(network(images), targets)
        loss.backward()
        optimiser.step()

    for _ in range(args.warmup):
        step()
    durations = []
    started = time.perf_counter()
    while len(durations) < args.steps:
        begin = time.perf_counter()
        step()
        durations.append(time.perf_counter() - begin)
        if time.perf_counter() - started > args.max_seconds:
            break
    durations.sort()
    median = durations[len(durations) // 2]
    return {"arch": arch, "size": size, "steps": len(durations), "s_per_step": median,
            "images_per_s": args.batch / median}


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()} "
          f"(interop {torch.get_num_interop_threads()}), fp32, batch {args.batch}, "
          f"{args.warmup} warm-up + up to {args.steps} timed steps (median)")
    try:
        load = os.getloadavg()
        print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other work slows every row)")
    except OSError:
        pass

    header = f"{'arch':<20}{'size':>6}{'steps':>7}{'s/step':>9}{'img/s':>9}{'x first':>9}{'x first/px':>12}"
    print(header)
    print("-" * len(header))
    rows = []
    started = time.perf_counter()
    for arch in archs:
        for size in sizes:
            if rows and time.perf_counter() - started > args.budget:
                print(f"{arch:<20}{size:>6}   not timed: the --budget of {args.budget:.0f} s is spent")
                continue
            row = time_configuration(arch, size, args)
            rows.append(row)
            first = rows[0]
            ratio = row["images_per_s"] / first["images_per_s"]
            # Throughput per input pixel, relative to the first row: > 1 means larger inputs
            # (or this network) use the CPU better than the first configuration did.
            per_pixel = ratio * (row["size"] / first["size"]) ** 2
            print(f"{arch:<20}{size:>6}{row['steps']:>7}{row['s_per_step']:>9.3f}{row['images_per_s']:>9.1f}"
                  f"{ratio:>9.3f}{per_pixel:>12.3f}", flush=True)
    print("x first: images/s relative to the first row; x first/px: the same per input pixel.")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
