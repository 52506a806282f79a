"""Draw the photos a model gets wrong more often (``train.py --sample-weights``).

A model that is right on most photos learns little from them; what holds its mean IoU back is a few
photos it gets badly wrong (a chair, a curtain or a painting taken for the person). Given the per-image
rows of ``evaluate.py --per-image`` on the *training* pairs, each pair is drawn in proportion to

    1 + strength * (1 - IoU) / mean(1 - IoU of its dataset root),   capped at ``cap``,

so an average photo is drawn ``1 + strength`` times as often as a perfect one, and no photo (a wrong
label scores badly too) more than ``cap`` times. The mean is taken per dataset root so that each set
keeps about its share of the draws: a set with rougher masks (vikram's come from a web service, mean
error 0.078 against eg1800's 0.027) would otherwise crowd out the cleaner ones. Pairs the file does not
name weigh as an average photo of their set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import Sampler

from training.data import Pair

DEFAULT_STRENGTH = 2.0
DEFAULT_CAP = 8.0


def _key(root: str | Path, name: str) -> tuple[str, str]:
    return str(Path(root).resolve()), name


def read_scores(path: Path) -> dict[tuple[str, str], float]:
    """IoU per (dataset root, base name) from ``evaluate.py --per-image`` rows; errors name the file."""
    scores = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise FileNotFoundError(f"--sample-weights {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            scores[_key(row["root"], row["name"])] = float(row["iou"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"--sample-weights {path}, line {number}: not an evaluate.py --per-image row "
                             f"with root, name and iou ({exc})") from None
    if not scores:
        raise ValueError(f"--sample-weights {path}: no rows")
    return scores


def pair_weights(pairs: Sequence[Pair], scores: dict[tuple[str, str], float],
                 strength: float = DEFAULT_STRENGTH, cap: float = DEFAULT_CAP) -> tuple[torch.Tensor, int]:
    """Each pair's drawing weight, and how many pairs the scores did not name."""
    errors = [1.0 - scores[k] if (k := _key(p.root, p.name)) in scores else None for p in pairs]
    by_root: dict[str, list[float]] = {}
    for (root, _), iou in scores.items():
        by_root.setdefault(root, []).append(1.0 - iou)
    mean_error = {root: max(sum(e) / len(e), 1e-6) for root, e in by_root.items()}
    relative = [1.0 if e is None else e / mean_error[_key(p.root, p.name)[0]]
                for p, e in zip(pairs, errors, strict=True)]
    weights = torch.tensor([1.0 + strength * r for r in relative], dtype=torch.float64)
    return weights.clamp(max=cap), errors.count(None)


class WeightedEpochSampler(Sampler[int]):
    """``len(weights)`` draws per epoch (with replacement), split across DDP processes.

    Each epoch's draw depends on (seed, epoch) only, so every process draws the same list and takes
    its own slice, and a resumed run draws what the uninterrupted one would have.
    """

    def __init__(self, weights: torch.Tensor, seed: int, rank: int = 0, world: int = 1) -> None:
        self.weights, self.seed, self.rank, self.world = weights, seed, rank, world
        self.per_rank = len(weights) // world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        drawn = torch.multinomial(self.weights, self.per_rank * self.world, replacement=True, generator=gen)
        return iter(drawn[self.rank::self.world].tolist())
