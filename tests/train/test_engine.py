"""The in-process engines (no Ray): plain == DeepSpeed, exact resume, export, refusals.

These use the real `distrec train` stage on real ml-100k; DeepSpeed runs in a one-process gloo group.
"""

import os
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from distrec.config import compose
from distrec.errors import ConfigError, DataError
from distrec.train.checkpoint import complete_checkpoints
from train_helpers import losses, rows, train


@pytest.fixture(scope="module")
def runs(local_runs):
    return local_runs


def test_plain_and_deepspeed_give_the_same_losses(runs):
    out, plain, ds = runs
    a, b = losses(out / "plain"), losses(out / "ds")
    assert len(a) == len(b) == 12
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    assert a[-1] < a[0]  # it learns
    assert rows(out / "plain", "valid")[-1]["ndcg@10"] == pytest.approx(rows(out / "ds", "valid")[-1]["ndcg@10"])


def test_stopped_and_resumed_run_ends_like_an_uninterrupted_one(runs, prepared):
    out, _, ds = runs
    full = logged(out / "ds")
    weights = load_file(out / "ds" / "weights" / "last.safetensors")
    # "stop" after the checkpoint at step 4: what a crash there would leave behind
    for step, d in complete_checkpoints(out / "ds" / "checkpoints"):
        if step > 4:
            shutil.rmtree(d)
    for name in ("weights", "manifest.json", "model.json"):
        shutil.rmtree(out / "ds" / name, ignore_errors=True) if name == "weights" else (out / "ds" / name).unlink()
    resumed = train(prepared, out / "ds", "engine=local", "train.checkpoint_every=4")
    assert logged(out / "ds") == full
    assert resumed["final_loss"] == ds["final_loss"] and resumed["steps"] == 12
    # summed over both attempts, never reset (logged to 0.01 s, so fast steps may tie)
    seconds = [r["train_seconds"] for r in rows(out / "ds")]
    assert all(b >= a for a, b in zip(seconds, seconds[1:])) and seconds[-1] > seconds[0]
    again = load_file(out / "ds" / "weights" / "last.safetensors")
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_a_copied_checkpoint_is_finalised_into_its_own_model(runs, prepared, tmp_path):
    """Testing a snapshot of a long run: copy one checkpoint, "train" to its step; no step runs, the
    weights are exported as they were, and the summary says so instead of a NaN loss."""
    from distrec.stages.train import summary_table

    out, _, _ = runs
    snapshot = dict(complete_checkpoints(out / "ds" / "checkpoints"))[8]
    shutil.copytree(snapshot, tmp_path / "checkpoints" / snapshot.name)
    summary = train(prepared, tmp_path, "engine=local", "train.max_steps=8")
    assert summary["steps"] == 8 and summary["final_loss"] is None
    assert "no step ran in this attempt" in summary_table(summary)
    exported, saved = load_file(tmp_path / "weights" / "last.safetensors"), load_file(snapshot / "weights.safetensors")
    assert exported.keys() == saved.keys() and all(torch.equal(exported[k], saved[k]) for k in saved)


def logged(train_dir):
    """Everything logged but the timings."""
    drop = ("samples_per_s", "tokens_per_s", "train_seconds")
    return [{k: v for k, v in r.items() if k not in drop} for r in rows(train_dir, "train") + rows(train_dir, "valid")]


def test_exported_model_loads_and_recommends(runs):
    from distrec.train.export import TrainedModel

    out, _, ds = runs
    trained = TrainedModel(out / "ds")
    model, info = trained.load("best"), trained.info
    assert info["best_step"] == ds["best_step"] and info["num_items"] == 1682
    batch = {"input_ids": torch.tensor([[0, 0, 3, 5]]), "user_ids": torch.tensor([1])}
    ids, scores = model.recommend(batch, 10)
    assert ids.shape == (1, 10) and (ids > 0).all()


def test_a_checkpoint_of_another_model_is_refused(runs, prepared):
    out, _, _ = runs
    with pytest.raises(ConfigError, match="different model"):
        train(prepared, out / "ds", "engine=local", "train.checkpoint_every=4", "model.d_model=48")
    with pytest.raises(ConfigError, match="train.resume=false"):
        train(prepared, out / "ds", "engine=local", "train.resume=false")


def test_a_checkpoint_from_before_a_config_key_existed_means_its_legacy_value():
    from omegaconf import OmegaConf

    from distrec.models.config import LEGACY_VALUES, MethodConfig, ModelConfig
    from distrec.train.checkpoint import check_identity, model_identity

    def identity(model, method):
        return model_identity(model, method, 100, None, None)

    old = identity({"backbone": "hstu", "d_model": 64}, {"name": "hstu_retrieval"})  # before `init` existed
    check_identity(old, identity({"backbone": "hstu", "d_model": 64, "init": "torch", "norm_affine": True},
                                 {"name": "hstu_retrieval", "query_time": "current"}), "ckpt")
    with pytest.raises(ConfigError, match=r"model.init: 'torch' -> 'meta'"):
        check_identity(old, identity({"backbone": "hstu", "d_model": 64, "init": "meta"}, {"name": "hstu_retrieval"}),
                       "ckpt")
    with pytest.raises(ConfigError, match=r"model.d_model: 64 -> 48"):
        check_identity(old, identity({"backbone": "hstu", "d_model": 48}, {"name": "hstu_retrieval"}), "ckpt")
    # how a model is computed is not what it computes: a run resumes with activation checkpointing turned on
    check_identity(identity({"backbone": "hstu", "d_model": 64, "activation_checkpointing": False}, {"name": "x"}),
                   identity({"backbone": "hstu", "d_model": 64, "activation_checkpointing": True}, {"name": "x"}), "ckpt")
    # nor is regularisation: a branch resumes with other dropouts (a model's or a method's)
    check_identity(identity({"d_model": 64, "dropout": 0.1}, {"name": "acerec", "acerec": {"token_dropout": 0.0}}),
                   identity({"d_model": 64, "dropout": 0.0}, {"name": "acerec", "acerec": {"token_dropout": 0.2}}),
                   "ckpt")
    defaults = {"model": OmegaConf.structured(ModelConfig), "method": OmegaConf.structured(MethodConfig)}
    for path in LEGACY_VALUES:  # every legacy key is a real config key
        assert OmegaConf.select(defaults[path[0]], ".".join(path[1:])) is not None, path


def test_a_model_json_from_before_a_config_key_existed_loads_as_it_was_trained(tmp_path):
    # an HSTU trained before `model.init`/`norm_affine` existed: nn.Linear biases, affine layer norms
    from omegaconf import OmegaConf

    from distrec.artifacts import write_json
    from distrec.models.config import MethodConfig, ModelConfig
    from distrec.models.recommender import Catalog, build_model
    from distrec.train.export import TrainedModel

    model = {"backbone": "hstu", "d_model": 16, "n_layers": 1, "n_heads": 1, "max_history": 8}
    method = {"name": "hstu_retrieval", "normalize": True}
    legacy = OmegaConf.merge(OmegaConf.structured(ModelConfig), {**model, "init": "torch", "norm_affine": True})
    trained = build_model(legacy, OmegaConf.merge(OmegaConf.structured(MethodConfig), method), Catalog(30))
    (tmp_path / "weights").mkdir()
    torch.save(trained.state_dict(), tmp_path / "weights" / "best.pt")
    write_json(tmp_path / "model.json", {"model": model, "method": method, "num_items": 30})
    loaded = TrainedModel(tmp_path).load("best")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in trained.state_dict().items())


def test_a_resumed_run_keeps_its_training_targets_and_restarts_selection_on_a_new_metric(caplog):
    from distrec.train.loop import _resumable, run_protocol

    def protocol(*overrides, metric="ndcg@10"):
        return run_protocol(compose(["stage=train", "data=ml100k", *overrides]), metric)

    same, legacy = protocol()
    saved = {"step": 8, "best_metric": 0.1, "best_step": 6, "bad_evals": 1, "include_valid": False,
             "select_metric": "ndcg@10", "filter_history": False, "validation_users": "all"}
    assert same == {k: saved[k] for k in same}
    assert _resumable(saved, same, legacy, "ckpt")["best_step"] == 6
    with pytest.raises(ConfigError, match="include_valid"):
        _resumable(saved, protocol("train.include_valid=true")[0], legacy, "ckpt")
    restarted = _resumable(saved, protocol(metric="recall@10")[0], legacy, "ckpt")
    assert restarted["best_metric"] is None and restarted["bad_evals"] == 0 and restarted["step"] == 8
    assert "select_metric ndcg@10 -> recall@10" in caplog.text
    # a checkpoint from before validation users were sampled validated on the first N users
    sampled, legacy = protocol("train.val_max_users=3000")
    assert sampled["validation_users"] == "3000 sampled, seed 0"
    assert _resumable({**saved, "validation_users": "3000 sampled, seed 0"}, sampled, legacy, "ckpt")["best_step"] == 6
    old = {k: v for k, v in saved.items() if k != "validation_users"}
    assert _resumable(old, sampled, legacy, "ckpt")["best_step"] is None
    assert "validation_users first 3000 -> 3000 sampled, seed 0" in caplog.text


def test_a_corrupt_checkpoint_is_a_clear_error_and_nothing_is_overwritten(runs, prepared, tmp_path):
    out, _, _ = runs
    run_dir = tmp_path / "corrupt"
    shutil.copytree(out / "ds", run_dir)
    _, latest = complete_checkpoints(run_dir / "checkpoints")[-1]
    for f in (latest / "engine").iterdir():
        f.write_bytes(f.read_bytes()[:100])
    before = (run_dir / "weights" / "best.safetensors").read_bytes()
    with pytest.raises(DataError, match="cannot be loaded") as info:
        train(prepared, run_dir, "engine=local", "train.checkpoint_every=4")
    assert (run_dir / "weights" / "best.safetensors").read_bytes() == before
    assert str(info.value).startswith(f"{latest}/engine/") and "delete the checkpoint directory" in str(info.value)
    shutil.rmtree(latest)  # as the hint says: the run resumes from the previous checkpoint
    assert train(prepared, run_dir, "engine=local", "train.checkpoint_every=4")["steps"] == 12
    assert losses(run_dir) == pytest.approx(losses(out / "ds"), rel=1e-5, abs=1e-6)


class Payload:
    """What a crafted checkpoint file can hold: unpickling it runs `touch <marker>`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def refused(path):
    return pytest.raises(DataError, match=f"^{re.escape(str(path))}: refusing to load .* could run code")


@pytest.mark.parametrize("run, name", [("ds", "rng-0.pt"), ("ds", "engine/mp_rank_00_model_states.pt"),
                                       ("plain", "rng-0.pt"), ("plain", "plain.pt")])
def test_a_crafted_checkpoint_file_is_refused_and_runs_nothing(runs, prepared, tmp_path, run, name):
    out, _, _ = runs
    run_dir, marker = tmp_path / run, tmp_path / "code-ran"
    shutil.copytree(out / run, run_dir)
    _, latest = complete_checkpoints(run_dir / "checkpoints")[-1]
    torch.save({"torch": Payload(marker)}, latest / name)
    with refused(latest / name):
        train(prepared, run_dir, "engine=local" if run == "ds" else "engine=plain")
    assert not marker.exists()


def test_crafted_weights_are_refused_and_run_nothing(runs, tmp_path):
    from distrec.train.export import TrainedModel

    out, _, _ = runs
    run_dir, marker = tmp_path / "ds", tmp_path / "code-ran"
    shutil.copytree(out / "ds", run_dir)
    (run_dir / "weights" / "best.safetensors").unlink()  # a run from before safetensors: weights/best.pt
    torch.save({"weight": Payload(marker)}, run_dir / "weights" / "best.pt")
    with refused(run_dir / "weights" / "best.pt"):
        TrainedModel(run_dir).load("best")
    assert not marker.exists()


def test_a_process_started_beside_a_one_process_group_can_start_its_own():
    """The one-process group leaves no MASTER_PORT behind for subprocesses to inherit: a `distrec` run
    started from a process that trained in-process (a notebook, this test session) would fail to bind it."""
    import subprocess
    import sys

    from distrec.train.engine import init_single_process

    init_single_process()
    child = subprocess.run([sys.executable, "-c", "from distrec.train.engine import init_single_process; "
                            "init_single_process(); print('started')"], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0 and "started" in child.stdout, child.stderr[-2000:]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_checkpoints_resume_exactly_and_crafted_files_run_nothing(stage, tmp_path):
    """DeepSpeed ZeRO-1/2/3 files load with only DeepSpeed's own classes allowed besides tensors: the
    optimizer state comes back exactly, and a crafted file in their place is refused by name."""
    from distrec.config import compose
    from distrec.train.engine import init_single_process, make_engine, plan_batches

    init_single_process()
    cfg = compose(["engine=local", f"engine.zero_stage={stage}", "engine.precision=fp32"])
    batch = [({"input_ids": torch.tensor([[1, 2], [3, 4]])}, 1.0)]

    def engine():
        torch.manual_seed(0)
        return make_engine(TinyModel(), cfg.train, cfg.engine, plan_batches(2, 1), 10, torch.device("cpu"))

    trained = engine()
    trained.step(batch)
    trained.save(tmp_path)
    resumed = engine()
    resumed.load(tmp_path)
    assert [trained.step(batch)["loss"] for _ in range(2)] == [resumed.step(batch)["loss"] for _ in range(2)]

    files = sorted((tmp_path / "engine").glob("*.pt"))
    assert len(files) == 2 and "optim_states" in files[1].name  # the model's and this rank's optimizer's
    for f in files:
        saved = f.read_bytes()
        marker = tmp_path / "code-ran"
        torch.save({"optimizer_state_dict": Payload(marker)}, f, _use_new_zipfile_serialization=False)  # as DeepSpeed
        with refused(f):
            engine().load(tmp_path)
        assert not marker.exists()
        f.write_bytes(saved)


@pytest.mark.parametrize("kind,stage", [("plain", 0), ("deepspeed", 0), ("deepspeed", 2), ("deepspeed", 3)])
def test_a_resumed_run_takes_lr_betas_and_weight_decay_from_its_config(kind, stage, tmp_path):
    """A branch of a checkpoint with another train.lr / betas / weight_decay trains with those (the
    optimizer's state would bring back the old ones), the schedule at the resumed step."""
    from distrec.config import compose
    from distrec.train.engine import init_single_process, make_engine, plan_batches
    from distrec.train.schedules import lr_multiplier

    init_single_process()
    batch = [({"input_ids": torch.tensor([[1, 2], [3, 4]])}, 1.0)]

    def engine(*overrides):
        cfg = compose(["engine=local", f"engine.kind={kind}", f"engine.zero_stage={stage}", "engine.precision=fp32",
                       "train.warmup_steps=10", *overrides])
        return make_engine(TinyModel(), cfg.train, cfg.engine, plan_batches(2, 1), 100, torch.device("cpu"))

    trained = engine("train.lr=0.001", "train.weight_decay=0", "train.betas=[0.9,0.98]")
    for _ in range(3):
        trained.step(batch)
    trained.save(tmp_path)
    branch = engine("train.lr=0.01", "train.weight_decay=0.1", "train.betas=[0.8,0.999]")
    branch.load(tmp_path)
    decayed, other = branch.optimizer.param_groups
    assert (decayed["weight_decay"], other["weight_decay"]) == (0.1, 0.0)
    assert decayed["betas"] == other["betas"] == (0.8, 0.999)
    assert branch.lr == pytest.approx(0.01 * lr_multiplier("cosine", 10, 100)(3))  # the resumed step's LR
    assert branch.optimizer.state  # the moments came back
    branch.step(batch)
    assert branch.lr == pytest.approx(0.01 * lr_multiplier("cosine", 10, 100)(4))


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.out = torch.nn.Embedding(8, 4), torch.nn.Linear(4, 1)

    def forward(self, batch):
        return {"loss": self.out(self.embed(batch["input_ids"])).pow(2).mean()}


def test_half_written_checkpoints_are_ignored(runs, tmp_path):
    out, _, _ = runs
    root = tmp_path / "checkpoints"
    shutil.copytree(out / "ds" / "checkpoints", root)
    latest_step, latest = complete_checkpoints(root)[-1]
    (latest / "COMPLETE").unlink()  # as if the process died before marking it
    (root / ".step-99.tmp").mkdir()
    assert complete_checkpoints(root)[-1][0] < latest_step


def test_engine_settings_that_cannot_work_are_refused_before_any_work():
    from distrec.config import compose
    from distrec.train.engine import check_engine_config, plan_batches

    with pytest.raises(Exception, match="zero_stag"):
        compose(["engine.zero_stag=2"])  # unknown key: the typed schema
    with pytest.raises(ConfigError, match="num_workers=0"):
        check_engine_config(compose(["engine=plain", "engine.num_workers=2"]).engine)
    with pytest.raises(ConfigError, match="zero_stage=3"):
        check_engine_config(compose(["engine=zero2", "engine.offload_params=true"]).engine)
    with pytest.raises(ConfigError, match="multiple of"):
        plan_batches(100, 3)
    plan = plan_batches(256, 2, 32)
    assert (plan.micro_batch, plan.accumulation) == (32, 4)


def test_a_finished_run_given_more_steps_trains_on(runs, prepared, tmp_path):
    out, _, ds = runs
    run_dir = tmp_path / "longer"
    shutil.copytree(out / "ds", run_dir)
    longer = train(prepared, run_dir, "engine=local", "train.max_steps=14")
    assert longer["steps"] == 14 and len(losses(run_dir)) == 14


def test_a_run_resumed_at_its_last_step_still_reports_and_exports(runs, prepared, tmp_path):
    out, _, _ = runs
    run_dir = tmp_path / "at_end"
    shutil.copytree(out / "ds", run_dir)
    for step, d in complete_checkpoints(run_dir / "checkpoints"):
        if step > 6:
            shutil.rmtree(d)  # killed after step 6's checkpoint
    summary = train(prepared, run_dir, "engine=local", "train.max_steps=6")
    assert summary["steps"] == 6 and (run_dir / "manifest.json").exists()


def test_a_cooldown_branched_from_a_checkpoint_decays_from_the_peak_to_zero(runs, prepared, tmp_path):
    """The wsd branch of docs/training.md: a checkpoint of a (here cosine) run resumed with train.schedule=wsd
    and a larger max_steps trains on at the peak LR, decaying linearly to 0 over the last decay_steps."""
    out, _, _ = runs
    run_dir = tmp_path / "cooldown"
    shutil.copytree(out / "ds", run_dir)
    for step, d in complete_checkpoints(run_dir / "checkpoints"):
        if step > 8:
            shutil.rmtree(d)
    before = rows(run_dir)[:8]
    summary = train(prepared, run_dir, "engine=local", "train.schedule=wsd", "train.max_steps=16",
                    "train.decay_steps=6")
    peak = compose(["stage=train", "data=ml100k"]).train.lr
    after = rows(run_dir)
    assert summary["steps"] == 16 and after[:8] == before
    assert [r["lr"] for r in after[8:]] == pytest.approx([peak * min(1, (16 - s) / 6) for s in range(9, 17)])
    with pytest.raises(ConfigError, match="decay_steps"):
        train(prepared, tmp_path / "new", "engine=local", "train.schedule=wsd")


def test_deepspeed_starts_without_jit_building_its_shm_op(runs):
    """The in-process DeepSpeed run above went through the engine: DeepSpeed's comm backend must not
    have built (or waited on a lock for) its CPU shared-memory op, which training never uses."""
    import deepspeed.comm.comm as ds_comm

    assert ds_comm.cdb is not None and ds_comm.cdb.shm_comm_op is None
