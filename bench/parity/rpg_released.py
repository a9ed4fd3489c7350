"""distrec's RPG against the released RPG's computation (facebookresearch/RPG_KDD2025), from the same
weights on the same real batches (docs/parity.md, "RPG against its released code").

The released model is HF `GPT2Model` + m residual SiLU heads + cosine logits against the tied token
table; its loss and scores are restated here on a `GPT2Model` holding distrec's weights (GPT-2 set to
exact GELU and LayerNorm eps 1e-5, distrec's backbone). Two checks:

1. forward (eval mode, heads away from the identity): training loss over 64 windows, each labelled
   position's digit logits, and the validation top-10 by holistic scoring of 64 users;
2. training (fp32, dropouts 0): distrec's engine (plain, micro-batches with label weighting) against
   the released trainer's step (one forward of the global batch, torch AdamW, transformers' cosine
   schedule, clip 1.0) for `--steps` steps on the same batches.

Needs `transformers` (not a distrec dependency) and a run root with prepare + OPQ tokenize output:

    python bench/parity/rpg_released.py --root runs/rpg13 --sids runs/rpg13/sids_opq32 \\
        --steps 30 --lr 1e-3 --warmup 0 model.d_model=128 model.d_ff=256
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2Model
from transformers.optimization import get_scheduler

from distrec.config import compose
from distrec.data.batches import (TrainSampler, build_train_index, collate_eval, collate_train,
                                  eval_rows)
from distrec.data.dataset import load_prepared
from distrec.models.recommender import Catalog, build_model
from distrec.tokenize.sid_table import SIDTable
from distrec.train.engine import make_engine, plan_batches


class Released:
    """The released RPG's forward on a GPT2Model that holds a distrec RPG's weights."""

    def __init__(self, model, table, cfg):
        m, M, D = model.digits, model.codes_per_digit, cfg.model.d_model
        self.m, self.M, self.D, self.temperature = m, M, D, model.temperature
        self.gpt2 = GPT2Model(GPT2Config(vocab_size=m * M + 2, n_positions=cfg.model.max_history, n_embd=D,
                                         n_layer=cfg.model.n_layers, n_head=cfg.model.n_heads, n_inner=cfg.model.d_ff,
                                         activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                         layer_norm_epsilon=1e-5))
        self.heads = torch.nn.ModuleList(torch.nn.Linear(D, D) for _ in range(m))
        g = self.gpt2
        with torch.no_grad():  # released vocabulary: 0 pad, 1 + d * M + c digit d code c, then eos
            g.wte.weight.zero_()
            g.wte.weight[1:-1] = model.code_embeddings().reshape(-1, D)
            g.wpe.weight.copy_(model.backbone.pos.weight)
            pairs = [(g.ln_f, model.backbone.ln_out)]
            for gb, b in zip(g.h, model.backbone.blocks):
                pairs += [(gb.ln_1, b.ln_attn), (gb.ln_2, b.ln_ff)]
                for conv, lin in ((gb.attn.c_attn, b.attn.qkv), (gb.attn.c_proj, b.attn.out),
                                  (gb.mlp.c_fc, b.ff[0]), (gb.mlp.c_proj, b.ff[2])):
                    conv.weight.copy_(lin.weight.T)  # HF Conv1D stores [in, out]
                    conv.bias.copy_(lin.bias)
            for ln, ours in pairs:
                ln.weight.copy_(ours.weight)
                ln.bias.copy_(ours.bias)
            for d, head in enumerate(self.heads):
                head.weight.copy_(model.heads.weight[d].T)
                head.bias.copy_(model.heads.bias[d])
        self.codes = torch.as_tensor(table.codes)
        self.item_tokens = torch.as_tensor(np.where(table.codes >= 0, table.codes + np.arange(m) * M + 1, 0))

    def parameters(self):
        return list(self.gpt2.parameters()) + list(self.heads.parameters())

    @staticmethod
    def right_pad(left: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """distrec's left-padded rows [B, W] with n real entries -> right-padded, as the released batches."""
        out = torch.zeros_like(left)
        for r in range(len(left)):
            out[r, :n[r]] = left[r, left.shape[1] - n[r]:]
        return out

    def states(self, input_ids):  # [B, T] right-padded -> head states [B, T, m, D]
        x = self.gpt2.wte(self.item_tokens[input_ids]).mean(-2)
        h = self.gpt2(inputs_embeds=x, attention_mask=(input_ids > 0).long()).last_hidden_state
        return torch.stack([h + F.silu(head(h)) for head in self.heads], -2)

    def logits(self, states):  # [..., m, D] -> cosine / temperature [..., m, M]
        emb = F.normalize(self.gpt2.wte.weight[1:-1], dim=-1).view(self.m, self.M, self.D)
        return torch.einsum("...md,mcd->...mc", F.normalize(states, dim=-1), emb) / self.temperature

    def loss(self, batch):
        """Mean over digits of each digit's CE over the labelled positions (released RPG.forward)."""
        n = (batch["input_ids"] > 0).sum(1)
        inputs, labels = self.right_pad(batch["input_ids"], n), self.right_pad(batch["target_ids"], n)
        logits = self.logits(self.states(inputs)[labels > 0])
        target = self.codes[labels[labels > 0]]
        return torch.stack([F.cross_entropy(logits[:, d], target[:, d]) for d in range(self.m)]).mean(), logits

    def top10(self, batch):
        """Validation path: per-digit log-softmax at the newest item, item score = mean over its digits."""
        n = (batch["input_ids"] > 0).sum(1)
        states = self.states(self.right_pad(batch["input_ids"], n))[torch.arange(len(n)), n - 1]
        logp = torch.log_softmax(self.logits(states), -1).reshape(len(n), -1)
        index = (self.item_tokens[1:] - 1).reshape(1, -1).expand(len(n), -1)
        scores = logp.gather(1, index).view(len(n), -1, self.m).mean(-1)
        values, ids = scores.topk(10, dim=1)
        return ids + 1, values


def forward_check(model, table, cfg, seq, T):
    model.eval()
    with torch.no_grad():
        model.heads.weight.normal_(0, 0.02)
        model.heads.bias.normal_(0, 0.02)
        ref = Released(model, table, cfg)
        index = build_train_index(seq, T)
        batch = collate_train(seq, index, np.random.default_rng(0).permutation(len(index))[:64], T)
        ours = model(batch)["loss"]
        h, items = model.hidden(batch["input_ids"])
        ours_logits = model.digit_logits(h[batch["target_ids"][:, -items.shape[1]:] > 0])
        theirs, theirs_logits = ref.loss(batch)
        rows, pos = eval_rows(seq, "valid")
        eval_batch = collate_eval(seq, rows[:64], pos[:64], T)
        ids, scores = model.recommend(eval_batch, 10)
        ref_ids, ref_scores = ref.top10(eval_batch)
    with torch.no_grad():  # back to RPG's zero-initialised heads for the training check
        model.heads.weight.zero_()
        model.heads.bias.zero_()
    return {"loss_distrec": float(ours), "loss_released": float(theirs),
            "labelled_positions": len(ours_logits),
            "max_abs_logit_diff": float((ours_logits - theirs_logits).abs().max()),
            "top10_equal": bool(torch.equal(ids, ref_ids)),
            "max_abs_score_diff": float((scores - ref_scores).abs().max())}


def training_check(model, ref, seq, cfg, steps: int):
    t, T = cfg.train, cfg.model.max_history
    plan = plan_batches(t.global_batch_size, 1, t.micro_batch_size)
    index = build_train_index(seq, T)
    sampler = TrainSampler(index, plan.global_batch, plan.micro_batch, 1, 0, cfg.seed, t.loss_weighting,
                           t.group_by_length)
    total = int(t.epochs * sampler.steps_per_epoch)
    engine = make_engine(model, t, cfg.engine, plan, total, torch.device("cpu"))
    opt = torch.optim.AdamW(ref.parameters(), lr=t.lr, weight_decay=0.0)  # released: betas, eps defaults
    sched = get_scheduler("cosine", optimizer=opt, num_warmup_steps=t.warmup_steps, num_training_steps=total)
    rows = []
    for step in range(steps):
        lrs = (engine.lr, opt.param_groups[0]["lr"])
        micro = [(collate_train(seq, index, ids, T), w) for ids, w in sampler.micro_batches(step)]
        ours = engine.step(micro)["loss"]
        opt.zero_grad()
        theirs, _ = ref.loss(collate_train(seq, index, sampler.global_batch(step), T))
        theirs.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        opt.step()
        sched.step()
        rows.append({"step": step + 1, "lr_distrec": lrs[0], "lr_released": lrs[1], "loss_distrec": ours,
                     "loss_released": theirs.item()})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="run root holding data/ (distrec prepare)")
    p.add_argument("--sids", required=True, help="OPQ SID table (distrec tokenize tokenizer=opq)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args, overrides = p.parse_known_args()
    torch.set_num_threads(1)
    cfg = compose(["stage=train", "experiment=rpg_beauty", f"paths.root={args.root}", f"paths.sids={args.sids}",
                   "engine=plain", "engine.precision=fp32", "method.rpg.embd_dropout=0", "method.rpg.attn_dropout=0",
                   f"train.lr={args.lr}", f"train.warmup_steps={args.warmup}", *overrides])
    data = load_prepared(cfg.paths.data)
    seq = data.sequence_data()
    table = SIDTable.load(cfg.paths.sids)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.method, Catalog(data.num_items, table))
    result = {"forward": forward_check(model, table, cfg, seq, cfg.model.max_history)}
    print(json.dumps(result["forward"]), flush=True)
    result["training"] = training_check(model.train(), Released(model, table, cfg), seq, cfg, args.steps)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
