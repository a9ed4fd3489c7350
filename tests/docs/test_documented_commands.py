"""Every command of README.md and docs/*.md works as written (issue 16). How each block is checked, and
how to mark one: tests/docs/doc_commands.py. Run blocks run in a fresh copy of the tracked files."""

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from doc_commands import ENVIRONMENT, REPO, all_blocks, check_block, expand

BLOCKS = all_blocks()
RUN_TIMEOUT_S = 3600  # the README pipeline table (prepare to sweep and run) took over 20 min on 2 busy cores


def params(kinds: tuple[str, ...]):
    marks = {"slow": [pytest.mark.slow]}
    return [pytest.param(b, id=b.id, marks=marks.get(b.kind, [])) for b in BLOCKS if b.kind in kinds]


@pytest.mark.parametrize("block", params(("run", "slow", "record")))
def test_block_composes_and_its_scripts_take_their_flags(block):
    check_block(block)


@pytest.fixture(scope="session")
def checkout(tmp_path_factory) -> Path:
    """The checkout's git-tracked files as they are on disk (what a clone has), copied once."""
    spec = importlib.util.spec_from_file_location("submit", REPO / "launch" / "submit.py")
    submit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(submit)
    dest = tmp_path_factory.mktemp("checkout")
    submit.package(REPO, dest)
    git = ["git", "-c", "user.name=docs-check", "-c", "user.email=docs-check@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "the checkout's tracked files"]):
        subprocess.run([*git, *args], cwd=dest, check=True)  # a clone: launch/submit.py ships git's files
    return dest


@pytest.mark.parametrize("block", params(("run", "slow")))
def test_block_runs_as_written(block, checkout, tmp_path, request):
    configs = check_block(block)
    real = any(cfg.data.format != "synthetic" for cfg in configs)
    data = request.getfixturevalue("data_root") if real else None  # skips, saying how, without the datasets
    work = tmp_path / "checkout"
    shutil.copytree(checkout, work, symlinks=True)
    (work / ".venv" / "bin").mkdir(parents=True)
    (work / ".venv" / "bin" / "activate").write_text("")  # the test's environment is active
    env = {**os.environ, **({"DISTREC_DATA": str(data)} if data else {}),
           "PYTHONPATH": os.pathsep.join([str(work), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(["/bin/bash", "-eo", "pipefail", "-c", ENVIRONMENT + block.text], cwd=work, env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, f"{block.id} failed (exit {done.returncode}):\n{block.text}\n" \
                                 f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"


def test_every_command_block_is_found_and_marked():
    """The extractor sees the blocks that must be checked (a broken fence or mark would hide them)."""
    ids = {b.id: b.kind for b in BLOCKS}
    assert ids["README.md:22"] == "run"
    assert any(i.startswith("docs/launch.md") and k == "slow" for i, k in ids.items())
    assert all(k in ("record", "template") for i, k in ids.items() if i.startswith(("docs/benchmarks.md", "docs/parity.md")))


def test_a_broken_command_fails_the_check(tmp_path):
    """The check can fail: a misspelt key, a missing script, a flag a script does not take."""
    from doc_commands import Block

    for text, error in (("distrec train data=ml100k train.epoch=1\n", "train.epoch"),
                        ("distrec trian data=ml100k\n", "not a stage"),
                        ("python bench/bench_missing.py\n", "does not exist"),
                        ("python bench/bench_engine.py --repeatz 3\n", "--repeatz")):
        with pytest.raises(Exception, match=error):
            check_block(Block("x.md", 1, "record", text))
    assert expand("for w in 0 1; do distrec train x=$w; done\n") == [["distrec", "train", "x=0"],
                                                                       ["distrec", "train", "x=1"]]
