"""The people-behind ceiling study: what each column sets right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.studies import behind_ceiling


def test_ceilings_set_right_only_what_their_name_says() -> None:
    own = np.zeros((10, 10), bool)
    own[2:10, 3:7] = True  # 32 pixels: the photo's own person
    behind = np.zeros_like(own)
    behind[0:4, 8:10] = True  # 8 pixels: one person behind
    truth = own | behind
    served = own.copy()
    served[9, 3:7] = False  # the main person's feet lost (4 pixels), the person behind missed
    row = behind_ceiling.ceilings(served, truth, served, own, truth)
    assert row["served"] == pytest.approx(28 / 40)
    assert row["crowd on"] == 1.0
    assert row["served, people behind perfect"] == pytest.approx(36 / 40)  # the feet still lost
    assert row["own person alone"] == pytest.approx(28 / 32)
    assert row["own person perfect"] == pytest.approx(32 / 40)  # the person behind still missed
    wrong = served | np.eye(10, dtype=bool)  # stray pixels off both people stay counted
    assert behind_ceiling.ceilings(wrong, truth, wrong, own, truth)["served, people behind perfect"] < 36 / 40


def test_a_named_crowd_network_that_is_not_there_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="none.pt"):
        behind_ceiling.main(["--data", str(tmp_path), "--crowd-checkpoint", str(tmp_path / "none.pt")])
