"""`distrec train` refuses what cannot work before anything is loaded, started or written, naming the key."""

import pytest
import torch

from distrec.config import compose
from distrec.errors import ConfigError


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from distrec.stages.prepare import run

    root = tmp_path_factory.mktemp("synthetic")
    run(compose(["stage=prepare", f"paths.root={root}", "data.synthetic.num_items=500",
                 "data.synthetic.num_users=300", "progress=false"]))
    return root


def train(root, train_dir, *overrides):
    from distrec.stages.train import run

    return run(compose(["stage=train", f"paths.root={root}", f"paths.train={train_dir}", "engine=plain",
                        "model.size=debug", "progress=false", *overrides]))


@pytest.mark.parametrize("override,message", [
    ("train.max_steps=-3", "train.max_steps=-3 must be >= 1"),  # was a TypeError inside DeepSpeed
    ("train.max_steps=0", "train.max_steps=0 must be >= 1 (or null"),  # trained train.epochs (20) epochs
    ("train.epochs=0", "train.epochs=0 must be >= 1"),
    ("train.lr=0", "train.lr=0.0 must be > 0"),
    ("train.eval_every=-1", "train.eval_every=-1 must be >= 0"),
    ("train.log_every=0", "train.log_every=0 must be >= 1"),
    ("train.val_max_users=0", "train.val_max_users=0 must be >= 1"),
    ("train.betas=[0.9,1.5]", "train.betas=[0.9, 1.5]"),
    ("train.schedule=linear", "train.schedule: Invalid value 'linear', expected one of [constant, cosine, inverse_sqrt, wsd]"),
    ("train.schedule=wsd", "train.schedule=wsd decays over the last train.decay_steps steps: set 0 < decay_steps"),
    ("engine.num_workers=-1", "engine.num_workers=-1 must be >= 0"),
    ("engine.cpus_per_worker=0", "engine.cpus_per_worker=0.0 must be > 0"),
])
def test_values_that_cannot_work_are_refused_naming_the_key(synthetic, tmp_path, override, message):
    with pytest.raises(ConfigError) as info:
        train(synthetic, tmp_path / "run", "engine=local", override)
    assert message in str(info.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")
def test_use_gpu_on_a_host_without_one_is_refused_up_front(synthetic, tmp_path):
    for engine in (["engine=local"], ["engine=zero2"]):  # in this process (was a raw NCCL error) / local Ray
        with pytest.raises(ConfigError, match="engine.use_gpu=true but this host has no usable CUDA GPU"):
            train(synthetic, tmp_path / "gpu", *engine, "engine.use_gpu=true")
    assert not (tmp_path / "gpu").exists()


def test_a_refused_run_writes_nothing(synthetic, tmp_path):
    """The batch checks the workers make run in the driver first; item_counts.npy was written before them."""
    with pytest.raises(ConfigError, match="larger than the"):
        train(synthetic, tmp_path / "run", "train.global_batch_size=100000")
    with pytest.raises(ConfigError, match="must be a multiple of"):
        train(synthetic, tmp_path / "run", "engine=zero2", "engine.num_workers=3", "train.global_batch_size=64")
    assert not (tmp_path / "run").exists()


def test_a_stage_refuses_artifacts_of_another_dataset(synthetic, tmp_path):
    """Later stages find their inputs by `name`: `name=beauty` without `data=beauty` composed the default
    dataset and recorded it against Beauty's artifacts. Now each stage checks what made its inputs."""
    from distrec.stages.evaluate import run as evaluate

    with pytest.raises(ConfigError, match=r"data/? was made from data=synthetic but this command composes "
                                          r"data=ml100k; add data=synthetic"):
        train(synthetic, tmp_path / "t", "data=ml100k")
    assert not (tmp_path / "t").exists()
    train(synthetic, tmp_path / "t", "train.max_steps=1", "train.eval_every=0")
    with pytest.raises(ConfigError, match="was made from data=synthetic but this command composes data=ml1m"):
        evaluate(compose(["stage=evaluate", "data=ml1m", f"paths.root={synthetic}", f"paths.train={tmp_path / 't'}",
                          f"paths.eval={tmp_path / 'e'}", "progress=false"]))


def test_the_run_directory_follows_the_dataset_unless_named():
    assert compose(["data=ml100k"]).paths.root == "runs/ml100k"
    assert compose(["data=ml100k", "name=mine"]).paths.root == "runs/mine"
    assert compose(["experiment=sasrec_beauty"]).paths.root == "runs/sasrec_beauty"
