"""Our EfficientNet-Lite0 encoder against timm's ``tf_efficientnet_lite0``: the same network, timed alike.

Why it exists: README "Training" says why the project keeps its own 150-line encoder module; this
prints the speed side of that decision. timm is not a project dependency: install it anywhere on the
path first (``pip install --target /tmp/timm timm`` and ``PYTHONPATH=/tmp/timm``), or the script says so.

    python benchmarks/studies/encoder_speed.py --size 320 --repeats 15
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import torch

from segmenter.efficientnet_lite import EfficientNetLite
from segmenter.model import fold_batchnorm


def median_ms(model: torch.nn.Module, size: int, repeats: int) -> float:
    """Median wall time of one bf16 forward pass of a 1 x 3 x size x size input (as served)."""
    x = torch.randn(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        for i in range(repeats + 3):
            start = time.perf_counter()
            model(x)
            if i >= 3:  # the first calls pick kernels
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if importlib.util.find_spec("timm") is None:
        print("encoder_speed.py: timm is not importable; install it on PYTHONPATH (see --help)", file=sys.stderr)
        return 2
    import timm

    torch.set_num_threads(args.threads)
    ours = fold_batchnorm(EfficientNetLite("efficientnet-lite0")).to(memory_format=torch.channels_last)
    theirs = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True).eval()
    theirs = theirs.to(memory_format=torch.channels_last)
    print(f"torch {torch.__version__}, timm {timm.__version__}, {args.threads} threads, {args.size} px, bf16")
    print("| encoder | parameters | median forward (ms) |\n| --- | --- | --- |")
    for name, model in (("ours (BatchNorm folded, with the 1280-channel head)", ours),
                        ("timm tf_efficientnet_lite0, features only (no head)", theirs)):
        params = sum(t.numel() for t in model.parameters()) / 1e6
        print(f"| {name} | {params:.2f} M | {median_ms(model, args.size, args.repeats):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
