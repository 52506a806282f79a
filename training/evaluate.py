"""Evaluate a checkpoint (default: the shipped model) on one or more dataset roots.

Predictions go through ``segmenter.inference`` — the exact path TorchServe serves — and are
compared with the truth at each photo's original resolution.

    python training/evaluate.py --data datasets/ccp --val-list training/splits/shared_val.txt
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

from evaluation.data_options import add_crowd_options, add_data_options, all_pairs
from evaluation.pairs import DatasetError
from evaluation.validation import evaluate_samples, iter_samples, summarize
from segmenter import checkpoint
from segmenter.inference import TTA_MODES, Segmenter
from segmenter.refine import METHODS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p)
    add_crowd_options(p)
    p.add_argument("--refine", choices=METHODS, default="guided", help="full-resolution upsampling method")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="flip: average with the mirrored photo, as the served option tta=flip")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-amp", action="store_true", help="fp32 inference (default: bf16 where the CPU has it)")
    p.add_argument("--skip-bad", action="store_true", help="warn about and skip bad pairs instead of failing")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--per-image", type=Path, help="also write per-image rows as JSON lines to this file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ckpt_path = args.checkpoint or checkpoint.default_weights()
        segmenter = Segmenter.from_checkpoint(ckpt_path, args.device, False if args.no_amp else None,
                                              args.crowd_checkpoint)
        pairs = all_pairs(args, args.skip_bad)
        if not pairs:
            raise DatasetError("no pairs to evaluate (check --data and --val-list)")
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"evaluate.py: model {ckpt_path} (image size {segmenter.image_size}), {len(pairs)} pairs, "
          f"refine={args.refine}, tta={args.tta}, crowd={args.crowd} "
          f"({'a crowd network' if segmenter.crowd_model is not None else 'no crowd network'})", file=sys.stderr)
    rows = evaluate_samples(segmenter, iter_samples(pairs), args.refine, total=len(pairs), tta=args.tta,
                            crowd=args.crowd)
    summary = summarize(rows)
    summary["checkpoint"] = str(ckpt_path)
    if args.per_image:
        args.per_image.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    return 0


def table(summary: dict) -> str:
    """One row per data set and one overall, the figures docs/MODEL_CARD.md quotes."""
    rows = [(root, m["count"], m["iou"], m["dice"], m["boundary_f"]) for root, m in summary["per_dataset"].items()]
    rows.append(("overall", summary["count"], summary["mean_iou"], summary["mean_dice"], summary["mean_boundary_f"]))
    head = f"{'dataset':<40} {'pairs':>6} {'IoU':>7} {'Dice':>7} {'BF':>7}"
    return "\n".join([head] + [f"{r:<40} {n:>6} {i:>7.4f} {d:>7.4f} {b:>7.4f}" for r, n, i, d, b in rows])


if __name__ == "__main__":
    sys.exit(main())
