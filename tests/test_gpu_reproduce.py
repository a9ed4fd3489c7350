"""bench/gpu/pack and bench/gpu/reproduce, on the CPU: a pack of two tiny experiments (an item-ID and a
semantic-ID method on a generated catalog) and a dry run of the reproduction in processes that cannot
import Hydra, Ray, DeepSpeed or faiss, as on the GPU machine."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "gpu"))

from headlines import GPU, HEADLINES, LIMIT, Headline, pack  # noqa: E402

TINY = ["data.synthetic.num_items=300", "data.synthetic.num_users=200", "model.size=debug", "model.max_history=10"]
# what the GPU machine lacks: any import of these fails there
BLOCKER = """
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("hydra", "ray", "deepspeed", "faiss"):
            raise ImportError(f"{name} is not installed on the GPU machine")
sys.meta_path.insert(0, Absent())
"""


@pytest.mark.parametrize("headline", HEADLINES, ids=[h.key for h in HEADLINES])
def test_every_headline_composes_on_the_fast_path(headline):
    from distrec.config import compose

    cfg = compose(["stage=train", f"experiment={headline.experiment}", *GPU, *headline.overrides])
    assert cfg.engine.kind == "fast" and cfg.engine.num_workers == 0 and cfg.engine.use_gpu
    if headline.key == "hstu_ml1m":
        assert cfg.engine.precision == "fp32"  # the experiment's own setting survives engine=gpu


def test_pack_then_a_dry_run_without_hydra_ray_deepspeed_or_faiss(tmp_path):
    headlines = [Headline("tiny_sasrec", "quickstart", 1.0, ["method=sasrec", *TINY], {"ndcg@10": 0.5}, "none"),
                 Headline("tiny_tiger", "quickstart", 1.0, ["method=tiger", "model=t5", "method.beam_width=10",
                                                            "tokenizer.codebook_size=16", "embed.dim=16", *TINY])]
    info = pack(tmp_path / "pack", tmp_path / "runs", headlines)
    assert [h["key"] for h in info["headlines"]] == ["tiny_sasrec", "tiny_tiger"]
    assert info["size"]["total_bytes"] < LIMIT
    assert (tmp_path / "pack" / "site" / "omegaconf" / "__init__.py").exists()
    assert len(list((tmp_path / "pack" / "sids").iterdir())) == 1  # only the SID method's table travels

    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(block), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(REPO / "bench" / "gpu" / "reproduce"), "--pack", str(tmp_path / "pack"),
                          "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--dry-run",
                          "--budget", "120"], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {r["key"]: r for r in results["experiments"]}
    assert [rows[k]["status"] for k in ("tiny_sasrec", "tiny_tiger")] == ["ok", "ok"], out.stderr[-3000:]
    for r in rows.values():
        assert r["steps"] == 2 and r["test_users"] == 32 and 0 <= r["test"]["ndcg@10"] <= 1
        assert r["flops_per_sample"] > 0 and r["samples_per_s"] > 0
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| tiny_tiger | ok |" in table and "(dry run)" in table
    assert (tmp_path / "out" / "runs.tar.gz").exists()
