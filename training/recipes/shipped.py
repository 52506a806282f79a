"""Reproduce person-segmenter 1.0.0, the shipped model, from ImageNet weights: the whole recipe in one command.

    python training/recipes/shipped.py --datasets DATASETS            # or: make train-shipped DATASETS=...
    python training/recipes/shipped.py --datasets DATASETS --dry-run  # print the commands, run nothing

DATASETS holds ccp/, eg1800/ and vikram/ (each with Images/ and Masks/, docs/TRAINING.md). The recipe is the
runs that made 1.0.0, in order: Lite1 from ImageNet at 320 px, one epoch at 384 px, a warm restart at 352 px,
a restart at 384 px with the full-body set counted twice, then three restarts from that model (one drawing
the photos it gets wrong more often) and the mean of the four ("soup"), shipped at 352 px. Each shipped
intermediate is the model version it was (0.3.0, 0.3.1, 0.3.2), because the next run starts from it as it
was shipped (float16). About 8 hours on a 2-core CPU with bf16.

Each step is a separate command, so a step that fails or is stopped can be continued: `train.py --resume
WORK/<run>/last.pt` finishes an interrupted run, then `--start-at <next step>` goes on. Figures can differ a
little from the shipped model's: the original runs were stopped and resumed to fit the time at hand (one
restart's last epoch saw each data set once instead of twice), which this recipe does not repeat.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VAL_LIST = "training/splits/shared_val.txt"
DATASETS = ("ccp", "eg1800", "vikram")
VERSION = "1.0.0"
SERVED_SIZE = 352

# What every run of the recipe shares: AdamW with a cosine schedule, the encoder at a quarter of the rate,
# BCE + Dice, bf16 autocast, the augmentation of docs/TRAINING.md, one data worker and two threads.
COMMON = ["--batch-size", "8", "--encoder-lr-scale", "0.25", "--weight-decay", "0.01", "--loss", "bce_dice",
          "--amp", "--paste-prob", "0.3", "--crop-prob", "0.3", "--side-prob", "0.1", "--workers", "1",
          "--threads", "2", "--no-export"]


@dataclass
class Step:
    """One command of the recipe; ``before`` prepares a file it reads (run only when not a dry run)."""

    name: str
    argv: list[str]
    note: str
    before: Callable[[], None] | None = field(default=None, repr=False)


def _roots(root: Path, *sets: str) -> list[str]:
    return [arg for name in sets for arg in ("--data", str(root / name))]


def _data(root: Path, *sets: str) -> list[str]:
    """``--data`` per set (a set named twice counts twice) and the fixed validation split."""
    return [*_roots(root, *sets), "--val-list", VAL_LIST]


def training_names(root: Path, val_list: Path) -> list[str]:
    """The base names of every pair outside the validation split, which the hard-photo scoring reads."""
    val = {line.strip() for line in val_list.read_text().splitlines() if line.strip()}
    names = sorted({p.stem for name in DATASETS for p in (root / name / "Images").iterdir() if p.is_file()})
    return [n for n in names if n not in val]


def steps(root: Path, work: Path, to: Path, python: str) -> list[Step]:
    """The recipe, in order. ``root`` holds the data sets; runs and intermediate models go under ``work``."""
    train = [python, "training/train.py"]
    ship = [python, "training/ship.py"]

    def run(name: str) -> Path:
        return work / name

    def model(version: str) -> Path:
        return work / f"person-segmenter-{version}.pt"

    def shipped(src: Path, version: str, dst: Path | None = None) -> list[str]:
        return [*ship, str(src), "--half", "--image-size", str(SERVED_SIZE), "--version", version,
                "--to", str(dst or model(version))]

    names, rows = work / "hard" / "train_names.txt", work / "hard" / "train_rows.jsonl"

    def write_names() -> None:
        names.parent.mkdir(parents=True, exist_ok=True)
        names.write_text("\n".join(training_names(root, REPO / VAL_LIST)) + "\n")

    once = _data(root, "ccp", "eg1800", "vikram")
    return [
        Step("lite1-v1", [*train, *once, "--encoder", "efficientnet-lite1", "--image-size", "320", "--epochs", "10",
                          "--lr", "1.6e-3", "--ema", "0.999", "--seed", "31", *COMMON, "--out", str(run("lite1-v1"))],
             "EfficientNet-Lite1 U-Net from ImageNet weights, 10 epochs at 320 px (about 2 h)"),
        Step("lite1-384", [*train, *once, "--init", str(run("lite1-v1") / "best.pt"), "--image-size", "384",
                           "--epochs", "1", "--lr", "4e-4", "--ema", "0.998", "--seed", "41", *COMMON,
                           "--out", str(run("lite1-384"))],
             "one epoch at 384 px (15 min)"),
        Step("ship-0.3.0", shipped(run("lite1-384") / "best.pt", "0.3.0"), "model 0.3.0, served at 352 px"),
        Step("lite1-r352", [*train, *once, "--init", str(model("0.3.0")), "--image-size", "352", "--epochs", "6",
                            "--lr", "6e-4", "--ema", "0.999", "--seed", "91", *COMMON, "--out", str(run("lite1-r352"))],
             "warm restart: a new cosine schedule, 6 epochs at 352 px (about 50 min)"),
        Step("ship-0.3.1", shipped(run("lite1-r352") / "best.pt", "0.3.1"), "model 0.3.1"),
        Step("lite1-r384c", [*train, *_data(root, "ccp", "ccp", "eg1800", "vikram"), "--init", str(model("0.3.1")),
                             "--image-size", "384", "--epochs", "5", "--lr", "4e-4", "--ema", "0.999", "--seed", "111",
                             *COMMON, "--out", str(run("lite1-r384c"))],
             "restart at 384 px, the full-body set (ccp) counted twice, 5 epochs (about 65 min)"),
        Step("ship-0.3.2", shipped(run("lite1-r384c") / "best.pt", "0.3.2"), "model 0.3.2 (its best epoch)"),
        Step("lite1-r384e", [*train, *_data(root, "ccp", "ccp", "eg1800", "eg1800", "vikram"),
                             "--init", str(model("0.3.2")), "--image-size", "384", "--epochs", "3", "--lr", "3e-4",
                             "--ema", "0.999", "--seed", "121", *COMMON, "--out", str(run("lite1-r384e"))],
             "soup ingredient: restart at 384 px, portraits and full-body photos both counted twice, 3 epochs"),
        Step("score-training-pairs", [python, "training/evaluate.py", *_roots(root, *DATASETS),
                                      "--val-list", str(names), "--checkpoint", str(model("0.3.2")),
                                      "--per-image", str(rows)],
             "0.3.2 scores its own training pairs (writes the names outside the validation split first)",
             before=write_names),
        Step("lite1-hard", [*train, *once, "--init", str(model("0.3.2")), "--image-size", "384", "--epochs", "4",
                            "--lr", "3e-4", "--ema", "0.999", "--seed", "131", "--sample-weights", str(rows),
                            *COMMON, "--out", str(run("lite1-hard"))],
             "soup ingredient: restart drawing the pairs 0.3.2 gets wrong more often, 4 epochs at 384 px"),
        Step("soup", [python, "training/soup.py", str(model("0.3.2")), str(run("lite1-hard") / "best.pt"),
                      str(run("lite1-r384e") / "best.pt"), str(run("lite1-r384e") / "last.pt"),
                      "--to", str(work / "soup.pt")],
             "the mean of 0.3.2 and the three restarts' weights"),
        Step("ship-1.0.0", shipped(work / "soup.pt", VERSION, to), f"person-segmenter {VERSION}, served at 352 px"),
    ]


def _show(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", type=Path, required=True, help="folder holding ccp/, eg1800/ and vikram/")
    p.add_argument("--work", type=Path, default=Path("runs/shipped"),
                   help="folder for the runs and the intermediate models (default: runs/shipped)")
    p.add_argument("--to", type=Path, help="the final weights (default: WORK/person-segmenter-1.0.0.pt; "
                                           "segmenter/weights/person_unet.pt replaces the shipped file)")
    p.add_argument("--start-at", metavar="STEP", help="skip the steps before this one (after a stop)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and run nothing")
    p.add_argument("--python", default=sys.executable, help="the Python that runs each step")
    args = p.parse_args(argv)

    datasets, work = args.datasets.resolve(), args.work.resolve()  # each step runs in the repository root
    to = (args.to or work / f"person-segmenter-{VERSION}.pt").resolve()
    plan = steps(datasets, work, to, args.python)
    names = [s.name for s in plan]
    if args.start_at is not None:
        if args.start_at not in names:
            p.error(f"--start-at {args.start_at!r}: no such step; the steps are {', '.join(names)}")
        plan = plan[names.index(args.start_at):]
    if not args.dry_run:
        missing = [str(datasets / n / "Images") for n in DATASETS if not (datasets / n / "Images").is_dir()]
        if missing:
            print(f"shipped.py: error: no data set at {', '.join(missing)} (--datasets holds ccp/, eg1800/ and "
                  "vikram/, each with Images/ and Masks/: docs/TRAINING.md)", file=sys.stderr)
            return 2
        started = work / plan[0].name
        if started.exists() and "training/train.py" in plan[0].argv:
            print(f"shipped.py: error: {started} holds a run already; finish it with `python training/train.py "
                  f"--resume {started}/last.pt`, then rerun with --start-at the next step", file=sys.stderr)
            return 2

    for i, step in enumerate(plan, 1):
        print(f"# {i}/{len(plan)} {step.name}: {step.note}", flush=True)
        print(_show(step.argv), flush=True)
        if args.dry_run:
            continue
        if step.before is not None:
            step.before()
        done = subprocess.run(step.argv, cwd=REPO)
        if done.returncode != 0:
            print(f"shipped.py: step {step.name} failed (exit {done.returncode}); fix it, then rerun with "
                  f"--start-at {step.name}", file=sys.stderr)
            return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
