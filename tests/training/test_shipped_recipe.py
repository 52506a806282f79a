"""training/recipes/shipped.py: the shipped model's recipe, checked by its dry run (no training).

Every command it prints must parse with the real tools' own parsers, chain its files from one step to the
next, and end in ``ship.py --version`` with the version the model card names.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from training import ship
from training.options import parse_args

REPO = Path(__file__).resolve().parents[2]
RECIPE = [sys.executable, str(REPO / "training" / "recipes" / "shipped.py")]


def _dry_run(tmp_path: Path, *extra: str) -> list[list[str]]:
    proc = subprocess.run([*RECIPE, "--datasets", str(tmp_path / "data"), "--work", str(tmp_path / "w"),
                           "--dry-run", *extra], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert all(line.startswith("# ") for line in lines[::2])  # each command follows its note
    assert not (tmp_path / "w").exists()  # a dry run writes nothing
    return [shlex.split(line)[1:] for line in lines[1::2]]  # without the Python


def _value(argv: list[str], option: str) -> str:
    return argv[argv.index(option) + 1]


def test_the_recipe_chains_real_commands_into_the_shipped_version(tmp_path: Path) -> None:
    commands = _dry_run(tmp_path)
    scripts = [c[0] for c in commands]
    assert scripts == ["training/train.py", "training/train.py", "training/ship.py", "training/train.py",
                       "training/ship.py", "training/train.py", "training/ship.py", "training/train.py",
                       "training/evaluate.py", "training/train.py", "training/soup.py", "training/ship.py"]
    w = tmp_path / "w"
    trains = [parse_args(c[1:]) for c in commands if c[0] == "training/train.py"]
    for args in trains:  # what every run of the shipped recipe shares
        assert args.amp and args.loss == "bce_dice" and args.batch_size == 8 and args.no_export
        assert (args.encoder_lr_scale, args.weight_decay) == (0.25, 0.01)
        assert (args.paste_prob, args.crop_prob, args.side_prob) == (0.3, 0.3, 0.1)
        assert args.val_list == Path("training/splits/shared_val.txt")
    first, *restarts = trains
    assert first.encoder == "efficientnet-lite1" and first.init is None and first.image_size == 320
    assert [a.image_size for a in restarts] == [384, 352, 384, 384, 384]
    assert [a.seed for a in trains] == [31, 41, 91, 111, 121, 131]
    # each run starts from the one before it, as that run's model was shipped
    assert restarts[0].init == w / "lite1-v1" / "best.pt"
    assert restarts[1].init == w / "person-segmenter-0.3.0.pt"
    assert restarts[2].init == w / "person-segmenter-0.3.1.pt"
    assert restarts[3].init == restarts[4].init == w / "person-segmenter-0.3.2.pt"
    assert [p.name for p in restarts[2].data] == ["ccp", "ccp", "eg1800", "vikram"]  # full-body photos twice
    assert [p.name for p in restarts[3].data] == ["ccp", "ccp", "eg1800", "eg1800", "vikram"]

    ships = [c for c in commands if c[0] == "training/ship.py"]
    assert [_value(c, "--version") for c in ships] == ["0.3.0", "0.3.1", "0.3.2", "1.0.0"]
    assert all(ship.VERSION_PATTERN.fullmatch(_value(c, "--version")) for c in ships)
    assert all(_value(c, "--image-size") == "352" and "--half" in c for c in ships)
    assert [Path(_value(c, "--to")) for c in ships[:3]] == [w / f"person-segmenter-0.3.{i}.pt" for i in range(3)]

    score = commands[8]
    rows = Path(_value(score, "--per-image"))
    assert Path(_value(score, "--checkpoint")) == w / "person-segmenter-0.3.2.pt"
    assert restarts[4].sample_weights == rows  # the hard-photo run draws by the scores just written

    mix = commands[10]
    ingredients = [Path(a) for a in mix[1:mix.index("--to")]]
    assert ingredients == [w / "person-segmenter-0.3.2.pt", w / "lite1-hard" / "best.pt",
                           w / "lite1-r384e" / "best.pt", w / "lite1-r384e" / "last.pt"]
    assert Path(_value(mix, "--to")) == w / "soup.pt"
    assert Path(ships[-1][1]) == Path(_value(mix, "--to"))
    assert Path(_value(ships[-1], "--to")) == w / "person-segmenter-1.0.0.pt"  # never the shipped file by default


def test_the_recipe_ships_the_version_the_model_card_names(tmp_path: Path) -> None:
    card = (REPO / "docs" / "MODEL_CARD.md").read_text(encoding="utf-8").split("## Model details", 1)[1]
    named = re.search(r"person-segmenter (\d+\.\d+\.\d+)", card).group(1)
    assert _value(_dry_run(tmp_path)[-1], "--version") == named


def test_start_at_skips_the_steps_before(tmp_path: Path) -> None:
    commands = _dry_run(tmp_path, "--start-at", "soup", "--to", str(tmp_path / "out.pt"))
    assert [c[0] for c in commands] == ["training/soup.py", "training/ship.py"]
    assert Path(_value(commands[-1], "--to")) == tmp_path / "out.pt"


@pytest.mark.parametrize("argv, message", [
    (["--start-at", "nope", "--dry-run"], "no such step"),
    ([], "no data set at"),
])
def test_bad_input_is_refused_before_anything_runs(tmp_path: Path, argv: list[str], message: str) -> None:
    proc = subprocess.run([*RECIPE, "--datasets", str(tmp_path / "data"), "--work", str(tmp_path / "w"), *argv],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "w").exists()


def test_a_started_run_is_not_overwritten(tmp_path: Path) -> None:
    for name in ("ccp", "eg1800", "vikram"):
        (tmp_path / "data" / name / "Images").mkdir(parents=True)
    (tmp_path / "w" / "lite1-v1").mkdir(parents=True)
    proc = subprocess.run([*RECIPE, "--datasets", str(tmp_path / "data"), "--work", str(tmp_path / "w")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert "--resume" in proc.stderr and "lite1-v1/last.pt" in proc.stderr
    assert list((tmp_path / "w").iterdir()) == [tmp_path / "w" / "lite1-v1"]


def test_training_names_leave_out_the_validation_split(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "training" / "recipes"))
    try:
        import shipped
    finally:
        sys.path.pop(0)
    for name, stems in {"ccp": ["ccp_0001", "ccp_0950"], "eg1800": ["eg_1"], "vikram": ["v_1"]}.items():
        (tmp_path / name / "Images").mkdir(parents=True)
        for stem in stems:
            (tmp_path / name / "Images" / f"{stem}.jpg").write_bytes(b"")
    val = tmp_path / "val.txt"
    val.write_text("ccp_0950\neg_1\n")
    assert shipped.training_names(tmp_path, val) == ["ccp_0001", "v_1"]
