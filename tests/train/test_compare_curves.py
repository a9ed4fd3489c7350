"""bench/compare_curves.py: validation curves of several runs against training time, the best of each
within the shortest run's budget, and curves re-plotted from an earlier output once run dirs are gone."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def train_dir(root, name, points):
    d = root / name
    d.mkdir()
    rows = [{"step": 10 * i, "split": "train", "loss": 1.0} for i in range(len(points))]
    rows += [{"step": 10 * i, "split": "valid", "train_seconds": s, "ndcg@10": v} for i, (s, v) in enumerate(points)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_best_within_the_shortest_budget_and_replot_from_the_saved_curves(tmp_path):
    from compare_curves import main

    slow = train_dir(tmp_path, "slow", [(100, 0.01), (200, 0.02), (400, 0.05)])
    fast = train_dir(tmp_path, "fast", [(50, 0.03), (250, 0.04)])
    main([f"slow={slow}", f"fast={fast}", "--out", str(tmp_path / "a.png")])
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["budget"] == 250 and first["best_within_budget"] == {"slow": 0.02, "fast": 0.04}
    assert (tmp_path / "a.png").stat().st_size > 0

    # "slow" re-plotted from the saved curves, beside a new run
    new = train_dir(tmp_path, "new", [(300, 0.06)])
    main([f"slow={tmp_path / 'a.json'}:slow", f"new={new}", "--out", str(tmp_path / "b.png")])
    second = json.loads((tmp_path / "b.json").read_text())
    assert second["points"]["slow"] == first["points"]["slow"]
    assert second["best_within_budget"] == {"slow": 0.02, "new": 0.06}

    late = train_dir(tmp_path, "late", [(600, 0.07)])  # first validated past the shortest run's end
    main([f"fast={fast}", f"late={late}", "--out", str(tmp_path / "d.png")])
    assert json.loads((tmp_path / "d.json").read_text())["best_within_budget"] == {"fast": 0.04, "late": None}

    with pytest.raises(SystemExit, match="no curve 'rpg'"):
        main([f"rpg={tmp_path / 'a.json'}:rpg", "--out", str(tmp_path / "c.png")])
    with pytest.raises(SystemExit, match="not ndcg@10 against step"):
        main([f"slow={tmp_path / 'a.json'}:slow", "--x", "step", "--out", str(tmp_path / "c.png")])
