"""The crowd-network study: the first look's features, and the routed score of stored rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.studies import group_expert


def test_features_read_the_regions_as_the_server_does() -> None:
    prob = torch.zeros(100, 80)
    prob[10:100, 20:60] = 1.0  # a portrait, 90% of the height
    prob[5:15, 70:78] = 1.0  # and a small person beside it
    f = group_expert.features(prob)
    assert f["regions"] == 2 and f["largest_height"] == pytest.approx(0.9)
    assert f["others"] == pytest.approx(80 / 8000) and f["largest"] == pytest.approx(3600 / 8000)
    assert f["outside"] == pytest.approx(80 / 8000)  # the small person is far from the portrait
    prob[40:60, 60:62] = 0.3  # faint, but within reach of the portrait: its own edge, not evidence
    assert group_expert.features(prob)["outside"] == pytest.approx(80 / 8000)
    prob[80:90, 70:74] = 0.3  # faint and far
    assert group_expert.features(prob)["outside"] == pytest.approx(120 / 8000)


def test_the_served_rule_takes_the_crowd_networks_score_only_where_it_fires(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    rows = [  # a portrait (stays), a small group (sent), three people with one of full height (stays)
        {"case": "a: as is", "regions": 1, "largest_height": 0.95, "base": 0.96, "expert": 0.90, "mean": 0.93},
        {"case": "a: small group", "regions": 4, "largest_height": 0.3, "base": 0.60, "expert": 0.80, "mean": 0.70},
        {"case": "a: small group", "regions": 3, "largest_height": 0.95, "base": 0.70, "expert": 0.50, "mean": 0.60},
    ]
    for r in rows:
        r.update(height=r["largest_height"], largest=0.1, others=0.01, unsure=0.0)
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    assert group_expert.main(["--data", str(tmp_path), "--rows", str(path)]) == 0
    served = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| served"))
    cells = [c.strip() for c in served.strip("|").split("|")]
    assert cells[1:] == ["0.9600 (0%)", "0.7500 (50%)", "0.8200 (33%)"]


def test_without_rows_the_study_needs_the_crowd_network(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        group_expert.main(["--data", str(tmp_path)])
