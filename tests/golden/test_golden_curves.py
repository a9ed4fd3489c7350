"""Every golden curve re-run and compared point by point with its recorded values (curves.py)."""

import pytest

from curves import compare, load, names, run_curve


@pytest.mark.parametrize("name", names())
def test_curve_matches_the_recorded_one(name, tmp_path, data_root):
    spec = load(name)
    problems = compare(spec, run_curve(spec, tmp_path, data_root))
    shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
    assert not problems, f"golden curve '{name}' ({spec['why']}) moved:\n" + "\n".join(shown) + \
        f"\nIf the change is meant to move it, re-record: python tests/golden/update.py {name}"


def test_a_moved_curve_is_reported():
    spec = {"tolerance": {"loss": 0.01, "recall@10": 0.005},
            "curve": {"loss": [[1, 8.0], [2, 7.0]], "recall@10": [[2, 0.10]]}}
    assert compare(spec, spec["curve"]) == []
    moved = {"loss": [[1, 8.0], [2, 7.2]], "recall@10": [[2, 0.09]]}
    assert [p.split(":")[0] for p in compare(spec, moved)] == ["loss at step 2", "recall@10 at step 2"]
    assert "steps" in compare(spec, {"loss": [[1, 8.0]], "recall@10": [[2, 0.1]]})[0]
