"""Shared set-up of the engine tests: ml-100k prepared once per session, tiny fp32 runs."""

import pytest

from distrec.config import compose


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, data_root):
    """The real ml-100k dataset through the prepare stage (a data/ artifact in a temp dir)."""
    from distrec.stages.prepare import run

    root = tmp_path_factory.mktemp("ml100k")
    run(compose(["stage=prepare", "data=ml100k", f"data.path={data_root / 'ml-100k'}", f"paths.root={root}",
                 "progress=false"]))
    return root


@pytest.fixture(scope="session")
def local_runs(prepared, tmp_path_factory):
    """Two in-process runs of the same tiny model: plain torch and DeepSpeed ZeRO-0 (1 worker).
    The DeepSpeed one is also the 1-worker reference of the Ray tests."""
    from train_helpers import train

    out = tmp_path_factory.mktemp("engine")
    plain = train(prepared, out / "plain", "engine=plain")
    ds = train(prepared, out / "ds", "engine=local", "train.checkpoint_every=4")
    return out, plain, ds
