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
