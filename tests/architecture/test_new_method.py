"""Adding a method takes one model file and one config file (docs/architecture.md, "How to add a
method"): a toy semantic-ID method written outside distrec runs the whole pipeline, and the pipeline
embeds and tokenizes for it because it declares `uses_sids`."""

import json
import textwrap

from distrec.config import compose

MODEL_FILE = '''
"""A bag of semantic-ID tokens: an item is the sum of its digits' embeddings, a user the mean of
the history's items, scored against every item."""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from distrec.models.recommender import Recommender


class BagOfCodes(Recommender):
    name = "toy"

    def __init__(self, sid_table, dim: int):
        super().__init__()
        tokens = sid_table.tokens(np.arange(sid_table.num_items + 1))
        self.register_buffer("item_tokens", torch.as_tensor(tokens), persistent=False)
        self.embed = nn.Embedding(sid_table.vocab_size, dim, padding_idx=0)

    @classmethod
    def from_config(cls, model_cfg, method_cfg, catalog):
        return cls(catalog.sid_table, dim=int(method_cfg.options.get("dim", 8)))

    def scores(self, input_ids):
        items = self.embed(self.item_tokens).sum(1)  # [N + 1, d]
        real = (input_ids > 0).unsqueeze(-1).float()
        user = (items[input_ids] * real).sum(1) / real.sum(1).clamp(min=1)
        scores = user @ items.T
        scores[:, 0] = float("-inf")  # never the padding id
        return scores

    def forward(self, batch):
        target = batch["target_ids"][:, -1]
        keep = target > 0
        return {"loss": F.cross_entropy(self.scores(batch["input_ids"][keep]), target[keep])}

    @torch.no_grad()
    def recommend(self, batch, k):
        top = self.scores(batch["input_ids"]).topk(k, dim=1)
        return top.indices, top.values
'''
CONFIG_FILE = """
# toy: a bag of semantic-ID tokens (tests/architecture/test_new_method.py)
name: toy
module: toy_method
options:
  dim: 16
"""


def test_a_toy_method_needs_one_model_file_and_one_config_file(tmp_path, data_root, monkeypatch):
    from distrec.stages.run import run

    (tmp_path / "toy_method.py").write_text(textwrap.dedent(MODEL_FILE))
    (tmp_path / "configs" / "method").mkdir(parents=True)
    (tmp_path / "configs" / "method" / "toy.yaml").write_text(CONFIG_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))

    cfg = compose([f"hydra.searchpath=[file://{tmp_path / 'configs'}]", "method=toy", "data=ml100k",
                   f"data.path={data_root / 'ml-100k'}", f"paths.root={tmp_path / 'run'}", "model.size=debug",
                   "engine=plain", "train.global_batch_size=64", "train.max_steps=6", "train.warmup_steps=1",
                   "train.eval_every=3", "train.val_max_users=100", "eval.max_users=200", "progress=false"])
    run(cfg)
    assert json.loads((tmp_path / "run" / "train" / "model.json").read_text())["method"]["options"] == {"dim": 16}

    for artifact in ("data", "embed", "sids", "train", "eval"):  # embed + tokenize: it declared uses_sids
        assert (tmp_path / "run" / artifact / "manifest.json").exists(), artifact
    report = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert report["model"]["method"] == "toy" and report["metrics"]["users"] == 200
    assert report["metrics"]["invalid_id_rate"] == 0.0
