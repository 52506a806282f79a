"""training/evaluate.py's table: one row per data set, then the overall figures, aligned."""

from __future__ import annotations

from training.evaluate import table


def test_rows_per_data_set_then_overall() -> None:
    summary = {"count": 3, "mean_iou": 0.9, "mean_dice": 0.95, "mean_boundary_f": 0.8,
               "per_dataset": {"data/a": {"count": 2, "iou": 0.95, "dice": 0.97, "boundary_f": 0.85},
                               "data/b": {"count": 1, "iou": 0.8, "dice": 0.9, "boundary_f": 0.7}}}
    lines = table(summary).splitlines()
    assert lines[0].split() == ["dataset", "pairs", "IoU", "Dice", "BF"]
    assert lines[1].split() == ["data/a", "2", "0.9500", "0.9700", "0.8500"]
    assert lines[2].split() == ["data/b", "1", "0.8000", "0.9000", "0.7000"]
    assert lines[3].split() == ["overall", "3", "0.9000", "0.9500", "0.8000"]
    assert len({len(line) for line in lines}) == 1
