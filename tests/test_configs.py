"""Every shipped config composes against the typed schema; bad keys and types fail early."""


import pytest
from omegaconf import OmegaConf

from distrec.config import compose, config_dir

GROUPS = sorted(p.name for p in config_dir().iterdir() if p.is_dir())


def shipped(group):
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in shipped(g)])
def test_every_shipped_config_composes(group, option):
    key = f"{group}={option}"
    cfg = compose([key])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_misspelt_key_is_an_error():
    with pytest.raises(Exception, match="lrr"):
        compose(["train.lrr=0.1"])


def test_a_key_added_with_plus_that_nothing_reads_is_refused_with_the_closest_key():
    from distrec.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_step'.*did you mean 'train.max_steps'"):
        compose(["+train.max_step=5"])  # what Hydra suggests for the typo `train.max_step=5`
    with pytest.raises(ConfigError, match="'model.foo'"):
        compose(["+model.foo=1"])
    assert compose(["+data.files.items=items.csv"]).data.files["items"] == "items.csv"  # a free-form dict


def test_wrong_type_is_an_error():
    with pytest.raises(Exception, match="lr"):
        compose(["train.lr=fast"])


def test_cli_help_lists_stages(capsys):
    from distrec.cli import main

    main(["--help"])
    out = capsys.readouterr().out
    for stage in ("prepare", "embed", "tokenize", "train", "evaluate", "sweep", "run"):
        assert stage in out


def test_cli_keeps_overrides_contiguous_around_flags():
    from distrec.cli import hydra_argv

    assert hydra_argv("train", ["a=1", "--multirun", "b=2"]) == ["--multirun", "stage=train", "a=1", "b=2"]
    assert hydra_argv("train", ["--cfg", "job", "a=1"]) == ["--cfg", "job", "stage=train", "a=1"]


def test_cli_makes_artifact_paths_absolute(tmp_path, monkeypatch):
    from distrec.cli import absolute_paths

    monkeypatch.chdir(tmp_path)
    cfg = compose(["name=x"])
    absolute_paths(cfg)
    assert cfg.paths.data == str(tmp_path / "runs" / "x" / "data")
    assert all(str(v).startswith("/") for v in cfg.paths.values())


def test_every_experiment_decides_history_filtering_explicitly():
    """The evaluation protocol is part of an experiment: filtering the history moves HR@10 by ~40%
    on ML-1M, so no experiment may inherit it silently."""
    import yaml

    for path in sorted((config_dir() / "experiment").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        assert isinstance(spec.get("eval", {}).get("filter_history"), bool), f"{path.name}: set eval.filter_history"


def test_tiger_brings_its_encoder_decoder_unless_a_model_is_named():
    assert compose(["method=tiger"]).model.backbone == "t5"  # README's `distrec train method=tiger ...`
    assert compose(["method=tiger", "model=hstu"]).model.backbone == "hstu"  # the command line wins (and is refused)
