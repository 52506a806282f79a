"""Does a checkpoint lose on single people because its BatchNorm statistics were measured on other photos?

    python benchmarks/studies/batchnorm_stats.py --data datasets/ccp --data datasets/eg1800 --data datasets/vikram \\
        --val-list training/splits/shared_val.txt --checkpoint runs/group/best.pt --to runs/group-bn.pt

A run that trains on made-up scenes (``train.py --group-prob``) also measures its BatchNorm layers' running
mean and variance on them, and inference uses those. This study measures them again, on plain training
photos only (the training augmentations, no pasted people, no scenes), with every weight held, and writes
the checkpoint with the new statistics, to score with ``training/evaluate.py``. If the loss came from the
statistics, it goes away; the same done to a checkpoint trained without scenes is the control.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import torch
from torch import nn

from evaluation.pairs import find_pairs, read_name_list
from segmenter import checkpoint
from training.data import SegmentationDataset


def measure(model: nn.Module, data: SegmentationDataset, photos: int, batch: int = 8) -> int:
    """Reset every BatchNorm's running statistics and measure them as a plain average over ``photos``
    random samples of ``data``, in batches of one size (a short last batch would weigh as much as a full
    one); returns how many layers were measured. The weights do not change."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average, not an exponential one
    order = torch.randperm(len(data))[:photos].tolist()
    order = order[:max(batch, len(order) // batch * batch)]
    model.train()
    with torch.no_grad():
        for i in range(0, len(order), batch):
            model(torch.stack([data[j][0] for j in order[i:i + batch]]))
    model.eval()
    return len(layers)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", type=Path, required=True, help="dataset root (repeatable)")
    p.add_argument("--val-list", type=Path, help="base names left out (the validation split)")
    p.add_argument("--checkpoint", type=Path, help="the checkpoint measured (default: the shipped model)")
    p.add_argument("--to", type=Path, required=True, help="the checkpoint written, with the new statistics")
    p.add_argument("--photos", type=int, default=800, help="training photos measured")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    source = args.checkpoint or checkpoint.default_weights()
    model, config = checkpoint.load_model(source)
    left_out = read_name_list(args.val_list) if args.val_list else set()
    pairs = [pair for pair in find_pairs(args.data, check=False) if pair.name not in left_out]
    data = SegmentationDataset(pairs, config["image_size"])
    layers = measure(model, data, min(args.photos, len(data)))
    ckpt = checkpoint.load(source)
    ckpt["model"] = model.state_dict()
    ckpt.pop("train_model", None)  # the raw weights of a run, which a resume would mix with the new statistics
    checkpoint.save_atomic(ckpt, args.to)
    print(f"{source}: {layers} BatchNorm layers measured on {min(args.photos, len(data))} training photos -> {args.to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
