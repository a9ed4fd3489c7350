"""Planning a sweep: grid expansion, stable point ids, shared data, errors before any work."""

from pathlib import Path

import pytest

from distrec.config import compose
from distrec.errors import ConfigError
from distrec.scaling.sweep import expand_grid, plan, point_id


def test_grid_is_the_cartesian_product_crossed_with_points():
    sets = expand_grid({"model.size": ["debug", "small"], "train.max_steps": [5, 10]},
                       [{"method": "sasrec"}, {"method": "hstu_retrieval", "model": "hstu"}])
    assert len(sets) == 8
    assert {"method": "hstu_retrieval", "model": "hstu", "model.size": "small", "train.max_steps": 5} in sets
    assert expand_grid({}, [{"a": 1}, {"a": 1}]) == [{"a": 1}]  # the same point twice is one point


def test_point_ids_are_stable_and_distinct():
    a = point_id({"model.size": "debug", "data.synthetic.num_items": 300})
    assert a == point_id({"model.size": "debug", "data.synthetic.num_items": 300})
    assert a != point_id({"model.size": "debug", "data.synthetic.num_items": 3000})
    assert a.startswith("size-debug_num_items-300-")


def test_plan_shares_data_between_points_with_equal_data_keys(tmp_path):
    cfg = compose(["+sweep.grid={model.size:[debug,small],data.synthetic.num_items:[300,400]}"])
    shared, points = plan(cfg, ["train.max_steps=3", "stage=sweep", "sweep.max_concurrent=2"], tmp_path, compose)
    assert len(points) == 4 and len(shared) == 2
    assert all(s.stages == ["prepare"] for s in shared)  # SASRec reads item ids only
    for p in points:
        assert "train.max_steps=3" in p.args  # command-line overrides reach every point
        assert f"paths.root={tmp_path / 'points' / p.id}" in p.args
        assert not any(a.startswith(("stage=", "sweep.")) for a in p.args)
    by_data = {}
    for p in points:
        by_data.setdefault(p.values["data.synthetic.num_items"], set()).add(p.shared)
    assert all(len(keys) == 1 for keys in by_data.values()) and by_data[300] != by_data[400]


def test_command_line_is_the_point_without_a_grid(tmp_path):
    """What `distrec sweep --multirun model.size=debug,small` runs: one point per Hydra job."""
    _, (point,) = plan(compose([]), ["model.size=debug", "train.max_steps=3", "stage=sweep"], tmp_path, compose)
    assert point.values == {"model.size": "debug", "train.max_steps": 3}


def test_typo_and_reserved_keys_fail_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="modle"):
        plan(compose(["+sweep.grid={modle.size:[debug]}"]), [], tmp_path, compose)
    with pytest.raises(ConfigError, match="paths"):
        plan(compose(["+sweep.grid={paths.root:[x]}"]), [], tmp_path, compose)
    assert not any(Path(tmp_path).iterdir())
