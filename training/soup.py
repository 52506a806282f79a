"""Average the weights of several fine-tuned runs of one network (a "uniform model soup").

Two warm restarts from the same weights end in the same basin of the loss, a short step apart, and
each overfits its own random crops and seeds; the mean of their weights is often better than either
on held-out photos, at no cost in serving (Wortsman et al., 2022, "Model soups"). A warm restart
costs about an hour on a 2-core CPU for 0.001-0.002 IoU, so averaging restarts already made is the
cheapest step: it is measured, not assumed (docs/research/warm-restarts-and-soups.md records what each soup scored).

    python training/soup.py runs/a/best.pt runs/b/best.pt --to runs/soup-ab/best.pt
    python training/ship.py runs/soup-ab/best.pt --half

Inputs are training checkpoints (an ``--ema`` run's averaged weights, as ``ship.py`` takes them) or
shipped files, float32 or float16. BatchNorm running statistics are averaged like the weights, an
approximation the evaluation measures; the networks must be the same (encoder, decoder widths); the
input size may differ and the first file's is kept (``ship.py --image-size`` picks the served one).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

from segmenter import checkpoint

# Config entries that may differ between the ingredients: they do not change the weights' shapes.
FREE_CONFIG_KEYS = ("image_size",)


def _architecture(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in FREE_CONFIG_KEYS}


def _ingredient(path: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """What the soup records of one input: enough to find and re-check it later."""
    info: dict[str, Any] = {"path": str(path), "epoch": ckpt.get("epoch"), "best_iou": ckpt.get("best_iou"),
                            "image_size": ckpt["config"].get("image_size")}
    if "provenance" in ckpt:  # a shipped file: its own training record
        info["provenance"] = json.loads(ckpt["provenance"])
    return info


def soup(sources: Sequence[str | Path], dst: str | Path) -> list[dict[str, Any]]:
    """Write the mean of the sources' weights to ``dst`` as a checkpoint ``ship.py`` takes; return the ingredients.

    Nothing is written unless every source loads and matches the first one's architecture, keys and
    shapes: a wrong file is named, not averaged in.
    """
    if len(sources) < 2:
        raise ValueError("a soup needs at least two checkpoints")
    paths = [Path(s) for s in sources]
    first = checkpoint.load(paths[0])
    arch = _architecture(first["config"])
    shapes = {k: v.shape for k, v in first["model"].items()}
    sums = {k: v.double() if v.is_floating_point() else v.clone() for k, v in first["model"].items()}
    ingredients = [_ingredient(paths[0], first)]
    for path in paths[1:]:
        ckpt = checkpoint.load(path)
        if _architecture(ckpt["config"]) != arch:
            raise ValueError(f"{path}: a different network ({_architecture(ckpt['config'])}) from "
                             f"{paths[0]} ({arch}); only runs of one network can be averaged")
        model = ckpt["model"]
        if model.keys() != shapes.keys() or any(model[k].shape != s for k, s in shapes.items()):
            raise ValueError(f"{path}: its tensors do not match {paths[0]}'s names and shapes")
        for k, v in model.items():
            if v.is_floating_point():
                sums[k] += v.double()
        ingredients.append(_ingredient(path, ckpt))
    n = len(paths)
    # float32 whatever the inputs were (a shipped float16 file among them): ship.py --half halves it again.
    mean = {k: (v / n).float() if v.is_floating_point() else v for k, v in sums.items()}
    # The ingredients as a JSON string: plain types only, so weights_only loading stays possible.
    checkpoint.save_atomic({"model": mean, "config": dict(first["config"]), "args": first.get("args", {}),
                            "epoch": None, "soup": json.dumps(ingredients)}, dst)
    return ingredients


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", type=Path, nargs="+", help="two or more checkpoints of the same network")
    p.add_argument("--to", type=Path, required=True, help="the averaged checkpoint to write (ship.py takes it)")
    args = p.parse_args(argv)
    try:
        ingredients = soup(args.checkpoints, args.to)
    except (FileNotFoundError, ValueError) as exc:
        p.error(str(exc))  # exits 2 with "soup.py: error: ...", as a wrong option does
    print(f"soup.py: wrote {args.to}, the mean of {len(ingredients)} checkpoints; measure it with "
          f"training/evaluate.py --checkpoint {args.to} before shipping it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
