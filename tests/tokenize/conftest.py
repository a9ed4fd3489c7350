"""Fixtures: real Amazon Beauty prepared by the `prepare` stage and embedded by the built-in TF-IDF."""

import pytest

from distrec.config import compose


def _make_cfg(root, *overrides):
    return compose([f"paths.root={root}", "progress=false", *overrides])


@pytest.fixture(scope="session")
def make_cfg():
    """make_cfg(run_root, *overrides) -> composed config (progress bars off)."""
    return _make_cfg


@pytest.fixture(scope="session")
def beauty_root(data_root, tmp_path_factory):
    """A run directory with data/ (prepare data=beauty) and embed/ (embed=tfidf, 128 dims)."""
    from distrec.stages import embed, prepare

    root = tmp_path_factory.mktemp("beauty_run")
    cfg = _make_cfg(root, "data=beauty", f"data.path={data_root}/amazon-beauty")
    prepare.run(cfg)
    embed.run(cfg)
    return root
