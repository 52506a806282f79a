"""The data options every scoring script shares, and the one loop that reads their pairs.

``--data`` (repeatable), ``--val-list``, ``--limit`` and ``--checkpoint`` mean the same in
training/evaluate.py and in every benchmark: declared here once, read here once, so two scripts
given the same options score the same photos.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from evaluation.pairs import Pair, pairs_of_root, read_name_list
from evaluation.progress import Progress
from segmenter.imaging import load_image, load_mask

Sample = tuple[Image.Image, np.ndarray]  # RGB photo, bool truth mask of the same size

PER_ROOT = "per root"
SHARED = "shared"
SPREAD = "spread"
_LIMIT_HELP = {
    PER_ROOT: "at most N pairs per root",
    SHARED: "at most N pairs in all, shared out evenly between the roots",
    SPREAD: "at most N pairs in all, evenly spaced over the split",
}


def positive_int(text: str) -> int:
    """An argparse type: a whole number above zero, so `--limit 0` is an error and not 'no limit'."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not above zero")
    return value


def add_data_options(parser: argparse.ArgumentParser, *, val_list_required: bool = False,
                     limit: int | None = None, limit_mode: str = PER_ROOT, checkpoint: bool = True,
                     checkpoint_required: bool = False) -> None:
    """Declare --data, --val-list, --limit (counted as ``limit_mode`` says) and, unless told not to, --checkpoint."""
    parser.add_argument("--data", action="append", type=Path, required=True,
                        help="dataset root with Images/ and Masks/ (repeatable; scored root by root)")
    parser.add_argument("--val-list", type=Path, required=val_list_required,
                        help="only the base names listed in this file (the fixed validation split)"
                             + ("" if val_list_required else "; default: every pair"))
    default = "" if limit is None else f" (default {limit})"
    parser.add_argument("--limit", type=positive_int, default=limit, help=_LIMIT_HELP[limit_mode] + default)
    parser.set_defaults(limit_mode=limit_mode)
    if checkpoint:
        parser.add_argument("--checkpoint", type=Path, required=checkpoint_required,
                            help="model checkpoint" + ("" if checkpoint_required else " (default: the shipped model)"))


def add_crowd_options(parser: argparse.ArgumentParser) -> None:
    """Declare --crowd and --crowd-checkpoint: which photos the crowd network looks at (segmenter/crowd.py)."""
    from segmenter.crowd import CROWD_MODES, DEFAULT_CROWD  # here: reading pairs must not import torch

    parser.add_argument("--crowd", choices=CROWD_MODES, default=DEFAULT_CROWD,
                        help="let the crowd network look at photos of groups: auto (as served), on (every photo), off")
    parser.add_argument("--crowd-checkpoint", type=Path,
                        help="the crowd network (default: the shipped one with the shipped model, none with "
                             "another --checkpoint)")


def read_pairs(args: argparse.Namespace, skip_bad: bool = False) -> dict[Path, list[Pair]]:
    """The selected pairs root by root, in --data's order, each root's in name order."""
    names = read_name_list(args.val_list) if args.val_list else None
    mode = getattr(args, "limit_mode", PER_ROOT)
    roots = {Path(root): pairs_of_root(root, names, args.limit if mode == PER_ROOT else None, skip_bad)
             for root in args.data}
    if args.limit and mode == SHARED:
        return _share_out(roots, args.limit)
    if args.limit and mode == SPREAD:
        return _spread(roots, args.limit)
    return roots


def all_pairs(args: argparse.Namespace, skip_bad: bool = False) -> list[Pair]:
    """read_pairs' pairs as one list, root after root."""
    return [pair for pairs in read_pairs(args, skip_bad).values() for pair in pairs]


def case_runs(args: argparse.Namespace, cases: Iterable[str],
              desc: str) -> Iterator[tuple[str, list[Sample], int, str]]:
    """(root name, the root's samples, index, case) for every selected photo and every case, with a progress line.

    The hard-case benchmarks build a case from photo ``i`` and its neighbours, so each root's photos are
    decoded once, together, and the cases of one photo follow each other.
    """
    names = list(cases)
    roots = read_pairs(args)
    bar = Progress(sum(len(v) for v in roots.values()) * len(names), desc)
    for root, pairs in roots.items():
        samples = [(load_image(q.image), load_mask(q.mask)) for q in pairs]
        for i in range(len(samples)):
            for case in names:
                yield root.name, samples, i, case
                bar.update()
    bar.close()


def _share_out(roots: dict[Path, list[Pair]], limit: int) -> dict[Path, list[Pair]]:
    """Take from each root in turn until ``limit``, so a large root does not crowd out a small one."""
    queues = {root: list(pairs) for root, pairs in roots.items()}
    out: dict[Path, list[Pair]] = {root: [] for root in roots}
    taken = 0
    while taken < limit and any(queues.values()):
        for root, queue in queues.items():
            if queue and taken < limit:
                out[root].append(queue.pop(0))
                taken += 1
    return out


def _spread(roots: dict[Path, list[Pair]], limit: int) -> dict[Path, list[Pair]]:
    """``limit`` pairs evenly spaced over all roots' pairs in order: a quick look that still spans the split."""
    flat = [pair for pairs in roots.values() for pair in pairs]
    if limit >= len(flat):
        return roots
    keep = {id(flat[i]) for i in np.linspace(0, len(flat) - 1, limit).round().astype(int)}
    return {root: [p for p in pairs if id(p) in keep] for root, pairs in roots.items()}
