"""Make a training checkpoint the model the project ships (``segmenter/weights/person_unet.pt``).

Keeps only what serving needs — weights, the model config, and provenance (epoch, validation
figures, the training arguments) — so the file stays small and carries no optimizer state.

    python training/ship.py runs/ship-v1/best.pt --half --image-size 352 --version 1.1.0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

from segmenter import checkpoint

# The largest weights file the repository takes (README, "Shipped model").
MAX_COMMITTED_MB = 40
# A model version as the changelog and TorchServe's archive write it: numbers and dots, an optional suffix.
VERSION_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*([-+][0-9A-Za-z.-]+)?")


def check_version(version: str) -> str:
    """Refuse a version the model card, the changelog and the .mar could not all carry as it is."""
    if not VERSION_PATTERN.fullmatch(version):
        raise ValueError(f"--version {version!r}: write it as numbers and dots, e.g. 1.1.0 (optionally "
                         "with a suffix such as 1.1.0-rc1)")
    return version


def version_of(ckpt: dict) -> str | None:
    """The model version a shipped checkpoint's provenance records, or None (a training checkpoint)."""
    raw = ckpt.get("provenance")
    if not isinstance(raw, str):
        return None
    try:
        provenance = json.loads(raw)
    except json.JSONDecodeError:
        return None
    version = provenance.get("version") if isinstance(provenance, dict) else None
    return version if isinstance(version, str) else None


def set_version(path: str | Path, version: str) -> dict:
    """Record ``version`` in an already shipped file's provenance, in place; returns the provenance.

    Only the provenance changes: the weight tensors and the config are written back as loaded, so the
    masks stay bit-identical and the rest of the provenance (a soup's ingredients) is kept. This names a
    model after the fact without shipping it again from its training checkpoints.
    """
    check_version(version)
    ckpt = checkpoint.load(path)
    raw = ckpt.get("provenance")
    if not isinstance(raw, str):
        raise ValueError(f"{path}: no provenance; this is a training checkpoint, ship it with --version instead")
    provenance = json.loads(raw)
    provenance["version"] = version
    checkpoint.save_atomic({**ckpt, "provenance": json.dumps(provenance)}, path)
    return provenance


def ship(src: str | Path, dst: str | Path = checkpoint.SHIPPED_WEIGHTS, raw: bool = False,
         half: bool = False, image_size: int | None = None, version: str | None = None) -> dict:
    """Write the slim checkpoint; returns its provenance.

    ``raw`` takes the optimizer's own weights of an ``--ema`` run instead of their average, so the
    average's gain can be measured (evaluate both) rather than assumed.

    ``half`` stores the floating-point tensors as float16, half the file, so a wider model fits the
    project's 40-MB cap on committed weights. Nothing is lost that inference keeps: loading casts them
    back to float32, and the CPU forward pass runs in bfloat16, whose 8-bit mantissa is coarser than
    float16's 11 bits.

    ``image_size`` serves the weights at another input size than they were trained at. The networks
    are fully convolutional, so this is only a number in the config, but not a free one: a size is
    worth shipping only when ``evaluate.py`` and ``benchmarks/robustness.py`` say so on copies at
    each size (docs/research/input-size.md records the sweep behind the shipped choice).

    ``version`` names the model (docs/MODEL_CARD.md, CHANGELOG.md); it travels in the provenance, and
    ``export.py`` gives it to the .mar, so a served model says which weights it is.
    """
    if version is not None:
        check_version(version)
    if image_size is not None and (image_size <= 0 or image_size % 32):
        raise ValueError(f"--image-size {image_size}: the input side must be a positive multiple of 32 "
                         "(the encoder U-Net's total stride)")
    ckpt = checkpoint.load(src)
    trained_size = ckpt["config"].get("image_size")
    if image_size is not None:
        ckpt["config"] = {**ckpt["config"], "image_size": image_size}
    if raw:
        if "train_model" not in ckpt:
            raise ValueError(f"{src}: no raw weights (train_model): the run was not trained with --ema")
        ckpt["model"] = ckpt["train_model"]
    if half:
        ckpt["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    run = Path(src).parent
    metrics = {}
    if (run / "metrics.jsonl").is_file():
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        metrics = next((r for r in rows if r.get("epoch") == ckpt.get("epoch")), {})
    provenance = {"epoch": ckpt.get("epoch"), "args": ckpt.get("args", {}), "metrics": metrics,
                  "weights": ("raw" if raw else "soup" if "soup" in ckpt else
                              "average" if "train_model" in ckpt else "trained"),
                  "stored": "float16" if half else "float32", "trained_image_size": trained_size}
    if version is not None:
        provenance["version"] = version
    if "soup" in ckpt:  # training/soup.py's mean of several runs: name them, the epoch alone means nothing
        provenance["soup"] = json.loads(ckpt["soup"])
    # Provenance as a JSON string: plain types only, so weights_only loading stays possible.
    checkpoint.save_atomic({"model": ckpt["model"], "config": ckpt["config"],
                            "provenance": json.dumps(provenance)}, dst)
    return provenance


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--to", type=Path, default=checkpoint.SHIPPED_WEIGHTS)
    p.add_argument("--raw", action="store_true",
                   help="an --ema run's raw weights instead of the average (to measure what the average gains)")
    p.add_argument("--half", action="store_true",
                   help="store the weights as float16: half the file, the same masks to within rounding")
    p.add_argument("--image-size", type=int,
                   help="serve at this input side instead of the trained one (a multiple of 32; measure first)")
    p.add_argument("--version",
                   help="the model's version, e.g. 1.1.0: stored in the provenance and used for the .mar")
    p.add_argument("--provenance-only", action="store_true",
                   help="with --version: record the version in CHECKPOINT itself, an already shipped file, "
                        "and change nothing else")
    args = p.parse_args(argv)
    if args.provenance_only:
        if not args.version:
            p.error("--provenance-only needs --version")
        try:
            set_version(args.checkpoint, args.version)
        except (FileNotFoundError, ValueError) as exc:
            print(f"ship.py: error: {exc}", file=sys.stderr)
            return 2
        print(f"ship.py: {args.checkpoint} is now version {args.version} (weights unchanged)", file=sys.stderr)
        return 0
    try:
        info = ship(args.checkpoint, args.to, args.raw, args.half, args.image_size, args.version)
    except (FileNotFoundError, ValueError) as exc:
        print(f"ship.py: error: {exc}", file=sys.stderr)
        return 2
    size = args.to.stat().st_size / 1e6
    if "soup" in info:
        origin = f"the mean of {len(info['soup'])} checkpoints"
    else:
        val = info["metrics"].get("val_iou")
        origin = f"epoch {info['epoch']}, val IoU " + (f"{val:.4f}" if val is not None else "not recorded")
    named = f"version {info['version']}, " if "version" in info else ""
    print(f"ship.py: wrote {args.to} ({size:.1f} MB) from {args.checkpoint}, {named}{origin}", file=sys.stderr)
    if size > MAX_COMMITTED_MB:
        print(f"ship.py: warning: {size:.1f} MB is over the {MAX_COMMITTED_MB} MB the project commits"
              + ("" if args.half else "; --half stores it in half the space"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
