"""evaluation.data_options: the one declaration of --data/--val-list/--limit/--checkpoint and the one loop that
reads their pairs, which evaluate.py and every benchmark share."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from evaluation.data_options import SHARED, SPREAD, add_data_options, all_pairs, read_pairs
from tests.training.conftest import make_dataset


@pytest.fixture
def two_roots(tmp_path: Path) -> tuple[Path, Path]:
    return make_dataset(tmp_path / "big", count=6, seed=1), make_dataset(tmp_path / "small", count=2, seed=2)


def _parse(argv: list[str], **options: object) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_data_options(p, **options)
    return p.parse_args(argv)


def test_limit_per_root_and_val_list(two_roots: tuple[Path, Path], tmp_path: Path) -> None:
    big, small = two_roots
    names = tmp_path / "val.txt"
    names.write_text("# the split\ns001\ns003  # a comment\ns004\ns000\n")
    args = _parse(["--data", str(big), "--data", str(small), "--val-list", str(names), "--limit", "2"])
    got = read_pairs(args)
    assert list(got) == [big, small]
    assert [p.name for p in got[big]] == ["s000", "s001"]  # listed names only, in name order, at most 2
    assert [p.name for p in got[small]] == ["s000", "s001"]
    assert [p.root for p in all_pairs(args)] == [big, big, small, small]


def test_no_val_list_and_no_limit_reads_every_pair(two_roots: tuple[Path, Path]) -> None:
    big, small = two_roots
    assert len(all_pairs(_parse(["--data", str(big), "--data", str(small)]))) == 8


def test_shared_limit_takes_from_each_root_in_turn(two_roots: tuple[Path, Path]) -> None:
    big, small = two_roots
    got = read_pairs(_parse(["--data", str(big), "--data", str(small), "--limit", "5"], limit_mode=SHARED))
    assert [len(v) for v in got.values()] == [3, 2]
    assert [p.name for p in got[big]] == ["s000", "s001", "s002"]


def test_spread_limit_spans_the_split(two_roots: tuple[Path, Path]) -> None:
    big, small = two_roots
    got = all_pairs(_parse(["--data", str(big), "--data", str(small), "--limit", "3"], limit_mode=SPREAD))
    assert [(p.root.name, p.name) for p in got] == [("big", "s000"), ("big", "s004"), ("small", "s001")]


def test_defaults_and_options_a_script_leaves_out(two_roots: tuple[Path, Path]) -> None:
    args = _parse(["--data", str(two_roots[0])], limit=60)
    assert args.limit == 60 and args.checkpoint is None
    assert not hasattr(_parse(["--data", str(two_roots[0])], checkpoint=False), "checkpoint")


@pytest.mark.parametrize("argv", [["--limit", "0"], ["--limit", "-3"], ["--limit", "many"], []])
def test_bad_options_are_refused_by_name(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        _parse(["--data", "somewhere", *argv] if argv else [], val_list_required=True)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert ("--limit" in err) if argv else ("--data" in err and "--val-list" in err)


def test_a_missing_val_list_is_an_error_naming_it(two_roots: tuple[Path, Path], tmp_path: Path) -> None:
    args = _parse(["--data", str(two_roots[0]), "--val-list", str(tmp_path / "nope.txt")])
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_pairs(args)
