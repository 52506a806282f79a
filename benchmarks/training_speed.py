"""Training throughput (images/s): fp32 vs bf16 autocast, one process vs 2-process torchrun.

    python benchmarks/training_speed.py                         # shipped recipe: 16 filters, 256 px, batch 8
    python benchmarks/training_speed.py --base-filters 32 --batch-size 4    # train.py's defaults

Runs the real ``training/train.py`` for one epoch over a generated data set (synthetic 0.5-MP
photos with their person masks, so no data set is needed) in each configuration, and reads the
images/s that train.py itself logs in ``metrics.jsonl`` (training steps only: data loading
included, validation excluded). Single-process runs use every core for torch's threads; under
torchrun each of the 2 processes gets cores/2 threads, as train.py sets them. Nothing else should
run meanwhile: the point is the ratio between lines.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

from benchmarks.photos import figure_mask, synthetic_photo

REPO = Path(__file__).resolve().parent.parent


def make_dataset(root: Path, count: int) -> Path:
    (root / "Images").mkdir(parents=True)
    (root / "Masks").mkdir()
    for i in range(count):
        photo = synthetic_photo(0.48, seed=i)
        photo.save(root / "Images" / f"p{i:04d}.jpg", quality=90)
        figure_mask(photo.size).save(root / "Masks" / f"p{i:04d}.png")
    return root


def run(data: Path, out: Path, amp: bool, processes: int, args: argparse.Namespace) -> float:
    """images/s of one epoch of train.py in this configuration."""
    cmd = [str(REPO / "training" / "train.py"), "--data", str(data), "--epochs", "1", "--limit", str(args.images),
           "--val-fraction", "0.05", "--val-limit", "1", "--preview-count", "1", "--no-export",
           "--batch-size", str(args.batch_size), "--base-filters", str(args.base_filters),
           "--image-size", str(args.image_size), "--workers", str(args.workers), "--out", str(out)]
    if amp:
        cmd.append("--amp")
    if processes == 1:
        cmd = [sys.executable, *cmd]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *cmd]
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // processes)))
    subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return float(row["train_images_per_s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=96, help="training images per run")
    p.add_argument("--base-filters", type=int, default=16)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--data", type=Path, help="a real data set (default: a generated one)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data = args.data or make_dataset(Path(tmp) / "data", args.images + 8)
        results = {}
        for processes in (1, 2):
            for amp in (False, True):
                key = (processes, amp)
                results[key] = run(data, Path(tmp) / f"run-{processes}-{int(amp)}", amp, processes, args)
                print(f"  {processes} process(es), {'bf16' if amp else 'fp32'}: {results[key]:.2f} images/s",
                      file=sys.stderr)
    base = results[(1, False)]
    print(f"\nU-Net {args.base_filters} filters, {args.image_size} px, batch {args.batch_size} per process, "
          f"{args.images} images, {os.cpu_count()} cores\n")
    print("| processes | precision | images/s | vs 1 process fp32 |\n| --- | --- | --- | --- |")
    for (processes, amp), ips in results.items():
        name = "torchrun x2" if processes == 2 else "1"
        print(f"| {name} | {'bf16 autocast' if amp else 'fp32'} | {ips:.2f} | {ips / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
