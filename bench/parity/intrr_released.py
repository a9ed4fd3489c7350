"""distrec's IntRR against the released IntRR (AMAP-ML/IntRR 806e0f1) on the same Beauty split
(docs/parity.md, "IntRR against its released code").

The released model is `IntRRDecoderOnly` (src/models/modules/semantic_id/intrr_decoder_only_model.py),
built by hydra from its own `configs/experiment/intrr_train_flat.yaml` and imported from a local
extract; its data collate (`collate_functions.py`), beam search (`generate`) and evaluator
(`SIDRetrievalEvaluator`) are called as they are. Nothing of it is copied here.

`check`: the released model holds a distrec IntRR's weights (UID table = item_embedding, uid_proj =
input_mlp, RAN codebooks and MLPs) and, in its non-HF decoder slot (`HSTUDecoderModule`), a copy of
distrec's pre-LN backbone: the released T5 stack has no distrec counterpart, so the backbone is the
one part not compared. On real Beauty windows it compares
  1. data: the released fixed-start augmentation of whole users against distrec's windows;
  2. forward (eval): L_rec, every prefix's user-side logits per level, every history item's item-side
     logits, L_aln (released: per occurrence; distrec's logits averaged both ways);
  3. gradients of one backward each, per part (UID table, uid_proj, codebooks, level MLPs, backbone);
  4. the top-10 of validation users: the released `generate` against distrec's `recommend`, same width;
  5. training (fp32, dropout 0): distrec's Engine against torch Adam on the released loss.
The released model has max(code)+1 = 128 codes at every level; the check builds distrec on the same
codes with that size (the shipped table's dedup digit has 33).
`beam`: a trained distrec checkpoint in both; the released beam against distrec's, both normalisations.
`curve`: the released model as released (T5 stack, its init, lambda 0 unless --align-weight) trained
by its recipe (32 user rows x 16 accumulated, every prefix a sample, Adam 1e-3 + L2 1e-4, fp32,
dropout 0.15) on distrec's split: loss, distinct item paths per level, and at the end recall / NDCG
with its beam and evaluator on distrec's first validation users. distrec's curves are `distrec train`
runs; `table` puts them side by side (commands in docs/parity.md).

Needs the released code and its pure-Python dependencies outside the project venv:

    # fetch github:AMAP-ML/IntRR (mirror at /work/.mirror/AMAP-ML+IntRR/repo), then
    git -C $MIRROR archive HEAD $(git -C $MIRROR ls-tree -r --name-only HEAD | grep -v -e notices.txt -e ^refs/) \\
        | tar -x -C runs/peer/IntRR
    pip install --target /tmp/intrrpkg --no-deps lightning==2.5.0 lightning-utilities==0.14.3 \\
        torchmetrics==1.0.3 transformers==4.47.0 tokenizers==0.21.0 huggingface_hub==0.26.5 python-dotenv
    python bench/parity/intrr_released.py check --root runs/intrr_beauty --out bench/results/parity/intrr_check.json
"""

from __future__ import annotations

import argparse
import copy
import importlib.machinery
import json
import sys
import time
import types
from collections import Counter
from pathlib import Path
from unittest.mock import MagicMock

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distrec.config import compose
from distrec.data.batches import (SequenceData, TrainSampler, build_train_index, collate_eval, collate_train,
                                  eval_rows)
from distrec.data.dataset import load_prepared
from distrec.models.methods.intrr import count_paths
from distrec.models.recommender import Catalog, build_model
from distrec.tokenize.sid_table import SIDTable
from distrec.train.engine import make_engine, plan_batches
from distrec.train.weights import read_weights

PAD = -1  # the released padding / masking token; its item ids are distrec's minus one


def import_released(code: str, pkgs: str) -> types.SimpleNamespace:
    """The released modules, from the extract `code` with its dependencies in `pkgs`."""
    sys.path[:0] = [pkgs, code]
    # Only its TFRecord reader imports tensorflow, and nothing here reads TFRecords.
    tf = types.ModuleType("tensorflow")
    tf.__spec__ = importlib.machinery.ModuleSpec("tensorflow", None)
    tf.__getattr__ = lambda name: MagicMock()
    sys.modules.setdefault("tensorflow", tf)
    import hydra
    from omegaconf import OmegaConf

    import src.utils  # noqa: F401  (the released package must be imported in this order)
    from lightning.pytorch.trainer.states import TrainerFn
    from src.data.loading.components import collate_functions
    from src.data.loading.components.label_function import NextKTokenMasking
    from src.models.modules.semantic_id.decoder_only_model import HSTUDecoderModule

    cfg = OmegaConf.load(Path(code) / "configs/experiment/intrr_train_flat.yaml")
    labels = {"sid_sequence_data": types.SimpleNamespace(transform=NextKTokenMasking(next_k=cfg.num_hierarchies)),
              "sequence_data": types.SimpleNamespace(transform=NextKTokenMasking(next_k=1))}
    return types.SimpleNamespace(cfg=cfg, instantiate=hydra.utils.instantiate, TrainerFn=TrainerFn,
                                 collate=collate_functions, labels=labels, HSTUDecoderModule=HSTUDecoderModule)


def released_model(R, codes: np.ndarray, *, align_weight: float, beam: int, dropout: float | None = None):
    """`IntRRDecoderOnly` as intrr_train_flat.yaml builds it, on the SID table `codes` [N, L] (0-based items)."""
    cfg = copy.deepcopy(R.cfg)
    cfg.total_item_id, cfg.model.codebooks = len(codes), None
    cfg.reconstruction_loss_weight, cfg.topk = align_weight, beam
    if dropout is not None:
        cfg.model.huggingface_model.config.dropout_rate = cfg.model.decoder.config.dropout_rate = dropout
    model = R.instantiate(cfg.model, codebooks=torch.as_tensor(codes.T.copy()))
    # Its stage logging asks trainer.state.fn; a bare module has no trainer (training vs validation
    # then follows model.training, as the released code intends).
    model._trainer = types.SimpleNamespace(state=types.SimpleNamespace(fn=R.TrainerFn.FITTING))
    return model


class DistrecBackbone(nn.Module):
    """distrec's backbone behind the released non-HF decoder interface: right-padded rows, mask 1 = item."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x, mask):
        # positions 0.. from the first item, as distrec's; a row's last column (its masked target) is
        # always padding, so clamping it to the table's end changes nothing
        positions = torch.arange(x.shape[1], device=x.device).clamp(max=self.backbone.max_len - 1)
        return self.backbone(x, pad=mask == 0, positions=positions)


def load_distrec_weights(R, ref, model):
    """Copy a distrec IntRR's weights into the released model; the backbone becomes a copy of distrec's."""
    with torch.no_grad():
        ref.item_embedding.weight.copy_(model.uid.weight[1:])
        ref.input_mlp.load_state_dict(model.uid_proj.state_dict())
        for theirs, ours in zip(ref.intrr_codebooks, model.ran.codebooks):
            # The released has max(code) + 1 rows at every level. Extra rows repeat row 0, so the item
            # side's argmax (first maximum) never picks one; the beam masks them.
            theirs.copy_(torch.cat([ours, ours[:1].expand(len(theirs) - len(ours), -1)]))
        for theirs, ours in zip(ref.codebook_linear_layers, model.ran.mlps):
            theirs.load_state_dict(ours.state_dict())
    ref.decoder = R.HSTUDecoderModule(DistrecBackbone(copy.deepcopy(model.backbone)))


# ---------------------------------------------------------------- batches in the released format

def released_batch(R, seq: SequenceData, codes: np.ndarray, prefixes, sequence_length: int):
    """Rows (user row, target index t) -> the released collate of items[:t + 1] (trimmed, label masked)."""
    items, sids = [], []
    for row, t in prefixes:
        ids = seq.items[seq.offsets[row]:seq.offsets[row] + t + 1]
        items.append(torch.as_tensor(ids - 1))
        sids.append(torch.as_tensor(codes[ids - 1]).reshape(-1))
    return R.collate.collate_fn_train_v2({"sequence_data": items, "sid_sequence_data": sids}, R.labels,
                                         sequence_length=sequence_length, masking_token=PAD, padding_token=PAD,
                                         seq_map={"sequence_data": 1, "sid_sequence_data": codes.shape[1]})


def window_prefixes(index, sample_ids, batch, T: int):
    """distrec's labelled positions of a train batch, in its order: (user row, absolute target index)."""
    rows, ends = index.user_row[sample_ids], index.end[sample_ids]
    b, j = (batch["target_ids"] > 0).nonzero(as_tuple=True)
    return list(zip(rows[b.numpy()].tolist(), (ends[b.numpy()] - T + j.numpy() + 1).tolist()))


def augmented_rows(R, seq, codes, users, sequence_length: int):
    """The released training collate (fixed-start augmentation) of whole users' training sequences:
    the (history, target) pairs it produces, 1-based item ids."""
    train_len = seq.train_lengths()
    items = [torch.as_tensor(seq.items[seq.offsets[u]:seq.offsets[u] + train_len[u]] - 1) for u in users]
    sids = [torch.as_tensor(codes[x.numpy()]).reshape(-1) for x in items]
    inp, lab = R.collate.collate_with_emb_causal_duplicate_v2(
        {"sequence_data": items, "sid_sequence_data": sids}, "sequence_data", 1, R.labels,
        sequence_length=sequence_length, masking_token=PAD, padding_token=PAD,
        seq_map={"sequence_data": 1, "sid_sequence_data": codes.shape[1]}, use_fixed_start_augmentation=True)
    hist = inp.transformed_sequences["sequence_data"].squeeze(-1)
    return [(tuple((h[h != PAD] + 1).tolist()), int(y) + 1) for h, y in zip(hist, lab.labels["sequence_data"])]


def model_input(batch):
    inp, _ = batch
    return dict(attention_mask=inp.mask, input_ids=inp.transformed_sequences["sequence_data"],
                input_sids=inp.transformed_sequences["sid_sequence_data"])


class Recorder:
    """Wrap a bound method and keep what each call returned."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs)
        self.calls.append(out)
        return out


# ---------------------------------------------------------------- check

def data_check(R, seq, codes, T: int, users: int) -> dict:
    """The released augmentation of the first `users` users vs distrec's labelled window positions."""
    index = build_train_index(seq, T)
    pick = np.flatnonzero(index.user_row < users)
    ours = Counter()
    for start in range(0, len(pick), 512):
        ids = pick[start:start + 512]
        batch = collate_train(seq, index, ids, T)
        for row, t in window_prefixes(index, ids, batch, T):
            base = seq.offsets[row]
            ours[(tuple(seq.items[base + max(0, t - T):base + t].tolist()), int(seq.items[base + t]))] += 1
    theirs = Counter()
    for start in range(0, users, 256):
        theirs.update(augmented_rows(R, seq, codes, range(start, min(users, start + 256)), T + 1))
    return {"users": users, "samples_distrec": sum(ours.values()), "samples_released": sum(theirs.values()),
            "same_multiset": ours == theirs}


def forward_check(R, model, ref, seq, codes, T: int, n_windows: int) -> dict:
    model.eval(), ref.eval()
    index = build_train_index(seq, T)
    ids = np.random.default_rng(0).permutation(len(index))[:n_windows]
    batch = collate_train(seq, index, ids, T)
    prefixes = window_prefixes(index, ids, batch, T)
    rb = released_batch(R, seq, codes, prefixes, T + 1)
    ours_walk, theirs_walk = Recorder(model.ran.walk), Recorder(ref.codebook_ran_module)
    model.ran.walk, ref.codebook_ran_module = ours_walk, theirs_walk
    seen = []
    hook = ref.item_embedding.register_forward_hook(lambda m, args, out: seen.append(args[0] + 1))
    weight, ref.reconstruction_loss_weight = ref.reconstruction_loss_weight, 0.0  # its loss is then L_rec alone
    try:
        with torch.no_grad():
            ours = model(batch)
            _, theirs, theirs_rec = ref.model_step(model_input=rb[0], label_data=rb[1])
    finally:
        del model.ran.walk, ref.codebook_ran_module
        hook.remove()
        ref.reconstruction_loss_weight = weight
    (_, ours_item), (_, ours_user) = ours_walk.calls
    theirs_item, theirs_user = theirs_walk.calls[0][1], theirs_walk.calls[1][1]
    unique = torch.unique(torch.as_tensor(batch["input_ids"]))
    unique = unique[unique > 0]  # distrec's item logits are over torch.unique of the batch, padding first
    order = torch.searchsorted(unique, seen[0])  # the released unique items, in its order
    occurrences = torch.bincount(torch.as_tensor([i for row, t in prefixes for i in
                                                  seq.items[seq.offsets[row] + max(0, t - T):seq.offsets[row] + t]]),
                                 minlength=int(unique.max()) + 1)[unique]
    per_item = sum(F.cross_entropy(lg[-len(unique):].float(), torch.as_tensor(codes[unique - 1, level]),
                                   reduction="none") for level, lg in enumerate(ours_item))
    return {"windows": n_windows, "prefixes": len(prefixes), "distinct_history_items": len(unique),
            "l_rec_distrec": float(ours["rec"]), "l_rec_released": float(theirs),
            "max_abs_user_logit_diff": max(float((a - b).abs().max()) for a, b in zip(ours_user, theirs_user)),
            "max_abs_item_logit_diff": max(float((a[-len(unique):][order] - b).abs().max())
                                           for a, b in zip(ours_item, theirs_item)),
            "l_aln_released": float(theirs_rec),
            "l_aln_distrec": float(ours["aln"]) if "aln" in ours else None,  # with lambda > 0 only
            "l_aln_distrec_logits_per_occurrence": float((per_item * occurrences).sum() / occurrences.sum()),
            "l_aln_distrec_logits_per_item": float(per_item.mean())}


def gradient_check(R, model, ref, seq, codes, T: int, n_windows: int) -> dict:
    """One backward of each loss on the same windows (train mode, dropout 0): the largest relative
    difference ||g_distrec - g_released|| / ||g_released|| over the parameters of each part."""
    model.train(), ref.train()
    index = build_train_index(seq, T)
    ids = np.random.default_rng(1).permutation(len(index))[:n_windows]
    batch = collate_train(seq, index, ids, T)
    rb = released_batch(R, seq, codes, window_prefixes(index, ids, batch, T), T + 1)
    model.zero_grad(set_to_none=True), ref.zero_grad(set_to_none=True)
    model(batch)["loss"].backward()
    ref.model_step(model_input=rb[0], label_data=rb[1])[1].backward()
    parts = {"uid_table": [(model.uid.weight.grad[1:], ref.item_embedding.weight.grad)],
             "uid_proj": [(a.grad, b.grad) for a, b in zip(model.uid_proj.parameters(), ref.input_mlp.parameters())],
             "codebooks": [(a.grad, b.grad) for a, b in zip(model.ran.codebooks, ref.intrr_codebooks)],
             "level_mlps": [(a.grad, b.grad) for a, b in zip(model.ran.mlps.parameters(),
                                                             ref.codebook_linear_layers.parameters())],
             "backbone": [(a.grad, b.grad) for a, b in zip(model.backbone.parameters(),
                                                           ref.decoder.decoder.backbone.parameters())]}
    out = {name: max(float((a - b).norm() / b.norm()) for a, b in pairs) for name, pairs in parts.items()}
    model.zero_grad(set_to_none=True), ref.zero_grad(set_to_none=True)
    return {"windows": n_windows, "max_relative_gradient_diff": out}


def beam_check(R, model, ref, seq, table, T: int, users: int, width: int, released_users: int,
               batch: int = 100) -> dict:
    """Top-`width` of the first validation users: distrec's `recommend` with its default normalisation
    (over all codes) and with `renormalise_beam` (over the valid children), and on the first
    `released_users` of them the released `generate` (slow: its prefix check compares every candidate
    with the whole SID table)."""
    model.eval(), ref.eval()
    ref.top_k_for_generation, model.beam_width, default = width, width, model.renormalise_beam
    rows, pos = eval_rows(seq, "valid")
    rows, pos = rows[:users], pos[:users]
    found = {"distrec": [], "distrec_renormalised": [], "released": []}
    with torch.no_grad():
        for s in range(0, len(rows), batch):
            r, p = rows[s:s + batch], pos[s:s + batch]
            for name, renormalise in (("distrec", False), ("distrec_renormalised", True)):
                model.renormalise_beam = renormalise
                found[name].append(model.recommend(collate_eval(seq, r, p, T), width)[0])
            if s < released_users:
                rb = released_batch(R, seq, table.codes[1:], list(zip(r.tolist(), p.tolist())), T + 1)
                sids = ref.generate(**model_input(rb))[0]
                found["released"].append(torch.as_tensor(table.item_for_codes(sids.numpy())))
    model.renormalise_beam = default
    found = {k: torch.cat(v) for k, v in found.items()}
    n = len(found["released"])
    out = {"users": len(rows), "width": width, "released_users": n}
    for name in ("distrec", "distrec_renormalised"):
        ours, theirs = found[name][:n], found["released"]
        out[f"{name}_vs_released"] = {"same_ranking_rows": float((ours == theirs).all(1).float().mean()),
                                      "same_top1_rows": float((ours[:, 0] == theirs[:, 0]).float().mean())}
    target = torch.as_tensor(seq.items[seq.offsets[rows] + pos])
    for name in ("distrec", "distrec_renormalised"):
        for k in sorted({10, width}):
            hit = found[name][:, :k] == target[:, None]
            rank = hit.float().argmax(1)
            out[f"recall@{k}_{name}"] = float(hit.any(1).float().mean())
            out[f"ndcg@{k}_{name}"] = float((hit.any(1) / torch.log2(rank + 2.0)).mean())
    return out


def training_check(R, model, ref, seq, codes, cfg, steps: int, weight_decay: float) -> dict:
    """distrec's Engine (label-weighted micro-batches) vs torch Adam on the released loss of the whole
    global batch's prefixes, step by step from the same weights."""
    t, T = cfg.train, cfg.model.max_history
    plan = plan_batches(t.global_batch_size, 1, t.micro_batch_size)
    index = build_train_index(seq, T)
    sampler = TrainSampler(index, plan.global_batch, plan.micro_batch, 1, 0, cfg.seed, t.loss_weighting,
                           t.group_by_length)
    engine = make_engine(model, t, cfg.engine, plan, steps, torch.device("cpu"))
    opt = R.instantiate(R.cfg.optim.optimizer)(params=ref.parameters(), weight_decay=weight_decay)
    ref.train()
    rows = []
    for step in range(steps):
        micro = [(collate_train(seq, index, ids, T), w) for ids, w in sampler.micro_batches(step)]
        ours = engine.step(micro)["loss"]
        ids = sampler.global_batch(step)
        rb = released_batch(R, seq, codes, window_prefixes(index, ids, collate_train(seq, index, ids, T), T), T + 1)
        opt.zero_grad()
        _, theirs, _ = ref.model_step(model_input=rb[0], label_data=rb[1])
        theirs.backward()
        opt.step()
        rows.append({"step": step + 1, "loss_distrec": ours, "loss_released": theirs.item()})
        print(json.dumps(rows[-1]), flush=True)
    with torch.no_grad():  # where the two item sides now walk differently (a near-tie argmax flips)
        ours = torch.stack([lg.argmax(-1) for lg in model.walk_items(torch.arange(1, len(codes) + 1))[1]], 1)
    theirs = torch.stack(released_item_codes(ref), 1)
    return {"steps": rows, "items_on_another_path": int((ours != theirs).any(1).sum())}


def check(args, overrides):
    R = import_released(args.code, args.pkgs)
    cfg = compose(["stage=train", "experiment=intrr_beauty", f"paths.root={args.root}", "engine=plain",
                   "engine.precision=fp32", "model.dropout=0", f"method.intrr.align_weight={args.align_weight}",
                   f"train.weight_decay={args.weight_decay}", f"train.global_batch_size={args.global_batch}",
                   f"train.micro_batch_size={args.micro_batch}", *overrides])
    seq = load_prepared(cfg.paths.data).sequence_data()
    shipped = SIDTable.load(cfg.paths.sids)
    codes = shipped.codes[1:]
    table = SIDTable(shipped.codes, [int(codes.max()) + 1] * shipped.levels, shipped.dedup)  # released sizes
    T = cfg.model.max_history
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.method, Catalog(len(codes), table))
    ref = released_model(R, codes, align_weight=args.align_weight, beam=args.width, dropout=0.0)
    load_distrec_weights(R, ref, model)
    out = {"released": "AMAP-ML/IntRR 806e0f1", "codebook_sizes": table.codebook_sizes, "max_history": T,
           "align_weight": args.align_weight, "weight_decay": args.weight_decay, "global_batch": args.global_batch,
           "micro_batch": args.micro_batch}
    for name, fn in (("data", lambda: data_check(R, seq, codes, T, args.data_users)),
                     ("forward", lambda: forward_check(R, model, ref, seq, codes, T, args.windows)),
                     ("gradient", lambda: gradient_check(R, model, ref, seq, codes, T, args.windows)),
                     ("beam", lambda: beam_check(R, model, ref, seq, table, T, args.users, args.width, args.users))):
        out[name] = fn()
        print(name, json.dumps(out[name]), flush=True)
    if args.steps:
        out["training"] = training_check(R, model, ref, seq, codes, cfg, args.steps, args.weight_decay)
    write(out, args.out)


def beam(args, overrides):
    """A trained distrec checkpoint in both: the released beam vs distrec's on validation users. The
    released level-4 codebook has 128 rows; the checkpoint's 33 fill the first (the rest are masked)."""
    R = import_released(args.code, args.pkgs)
    cfg = compose(["stage=train", "experiment=intrr_beauty", f"paths.root={args.root}", *overrides])
    seq = load_prepared(cfg.paths.data).sequence_data()
    table = SIDTable.load(cfg.paths.sids)
    model = build_model(cfg.model, cfg.method, Catalog(table.num_items, table))
    model.load_state_dict(read_weights(args.weights, "IntRR weights", "pass a distrec checkpoint's weights file"))
    ref = released_model(R, table.codes[1:], align_weight=0.0, beam=args.width)
    load_distrec_weights(R, ref, model)
    out = {"weights": args.weights, "users": args.users,
           "by_width": [beam_check(R, model, ref, seq, table, cfg.model.max_history, args.users, w,
                                      args.released_users)
                        for w in args.widths]}
    print(json.dumps(out), flush=True)
    write(out, args.out)


# ---------------------------------------------------------------- curve

def released_item_codes(ref) -> list[torch.Tensor]:
    """The code each catalog item's item-side walk chooses at every level."""
    with torch.no_grad():
        return ref.codebook_ran_module(ref.input_mlp(ref.item_embedding.weight), ref.emb_projection_flag, None)[4]


def released_code_usage(ref) -> dict:
    """Distinct item-side codes / paths per level over the whole catalog (distrec's `code_usage`)."""
    return count_paths(torch.stack(released_item_codes(ref), 1))


def released_validate(R, ref, seq, codes, users: int, sequence_length: int, batch: int = 64) -> dict:
    """The released eval path (its collate, `generate`, `SIDRetrievalEvaluator`) on distrec's first
    `users` validation users."""
    ref.eval()
    ev = R.instantiate(R.cfg.eval.evaluator)
    rows, pos = eval_rows(seq, "valid")
    with torch.no_grad():
        for s in range(0, min(users, len(rows)), batch):
            rb = released_batch(R, seq, codes, list(zip(rows[s:s + batch].tolist(), pos[s:s + batch].tolist())),
                                sequence_length)
            sids, logp = ref.generate(**model_input(rb))
            ev(marginal_probs=logp, generated_ids=sids, labels=rb[1].labels["sid_sequence_data"])
    out = {name: float(metric.compute()) for name, metric in ev.metrics.items()}
    ref.train()
    return out


def curve(args, overrides):
    R = import_released(args.code, args.pkgs)
    cfg = compose(["stage=train", "experiment=intrr_beauty", f"paths.root={args.root}", *overrides])
    seq = load_prepared(cfg.paths.data).sequence_data()
    codes = SIDTable.load(cfg.paths.sids).codes[1:]
    S = int(R.cfg.sequence_length)  # items per row, the target included
    torch.manual_seed(args.seed)
    ref = released_model(R, codes, align_weight=args.align_weight, beam=int(R.cfg.topk))
    opt = R.instantiate(R.cfg.optim.optimizer)(params=ref.parameters())
    accumulate = int(R.cfg.trainer.accumulate_grad_batches)
    rows_per_micro = int(R.cfg.data_loading.train_dataloader_config.dataloader.batch_size_per_device)
    users = np.flatnonzero(seq.train_lengths() >= 2)
    per_epoch = len(users) // rows_per_micro
    log, started = [], time.time()

    def evaluate(step):  # code usage every time; recall / NDCG (slow: the released prefix check) at the end
        ranking = released_validate(R, ref, seq, codes, args.val_users, S) if step == args.steps else {}
        row = {"step": step, "split": "valid", "users": args.val_users if ranking else 0, **ranking,
               **released_code_usage(ref), "elapsed_s": time.time() - started}
        log.append(row)
        print(json.dumps(row), flush=True)

    evaluate(0)
    ref.train()
    for step in range(1, args.steps + 1):
        opt.zero_grad()
        total, prefixes = 0.0, 0
        for a in range(accumulate):  # Lightning: each micro-batch's mean loss / accumulate
            k = (step - 1) * accumulate + a
            epoch, i = divmod(k, per_epoch)
            perm = np.random.default_rng([args.seed, epoch]).permutation(users)
            batch = R.collate.collate_with_emb_causal_duplicate_v2(
                released_rows(seq, codes, perm[i * rows_per_micro:(i + 1) * rows_per_micro]), "sequence_data", 1,
                R.labels, sequence_length=S, masking_token=PAD, padding_token=PAD, use_fixed_start_augmentation=True,
                seq_map={"sequence_data": 1, "sid_sequence_data": codes.shape[1]})
            _, loss, rec = ref.model_step(model_input=batch[0], label_data=batch[1])
            (loss / accumulate).backward()
            total += loss.item() / accumulate
            prefixes += len(batch[0].mask)
        opt.step()
        row = {"step": step, "split": "train", "loss": total, "l_aln": float(rec), "prefixes": prefixes,
               "epoch": step * accumulate / per_epoch, "elapsed_s": time.time() - started}
        log.append(row)
        if step % args.log_every == 0:
            print(json.dumps(row), flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            evaluate(step)
    write({"released": "AMAP-ML/IntRR 806e0f1", "recipe": "intrr_train_flat.yaml", "align_weight": args.align_weight,
           "seed": args.seed, "rows": log}, args.out)


def released_rows(seq, codes, users):
    """Whole training sequences of `users`, as the released per-row reader yields them (0-based ids)."""
    n = seq.train_lengths()
    items = [torch.as_tensor(seq.items[seq.offsets[u]:seq.offsets[u] + n[u]] - 1) for u in users]
    return {"sequence_data": items, "sid_sequence_data": [torch.as_tensor(codes[x.numpy()]).reshape(-1) for x in items]}


def table(args, overrides):
    """The short curves side by side: `--runs name=path`, path a released curve JSON (`curve --out`) or a
    `distrec train` metrics.jsonl. Prints the markdown table of docs/parity.md; --out keeps all rows."""
    runs = {}
    for spec in args.runs:
        name, path = spec.split("=", 1)
        text = Path(path).read_text()
        runs[name] = json.loads(text)["rows"] if path.endswith(".json") else [json.loads(x) for x in text.splitlines()]
    at = {name: {(r["step"], r["split"]): r for r in rows} for name, rows in runs.items()}
    steps = sorted({r["step"] for rows in runs.values() for r in rows})
    names = list(runs)
    print("| step | " + " | ".join(f"{n} loss" for n in names) + " | " + " | ".join(f"{n} paths" for n in names) + " |")
    print("|" + "---|" * (1 + 2 * len(names)))
    for step in steps:
        loss = [at[n].get((step, "train"), {}).get("loss") for n in names]
        paths = [at[n].get((step, "valid"), {}).get("paths_l4") for n in names]
        if any(v is not None for v in paths) or step == steps[-1]:
            print(f"| {step} | " + " | ".join("" if v is None else f"{v:.2f}" for v in loss) + " | "
                  + " | ".join("" if v is None else str(v) for v in paths) + " |")
    last = {n: max((r for r in rows if r["split"] == "valid" and "recall@10" in r), key=lambda r: r["step"])
            for n, rows in runs.items()}
    for n, r in last.items():
        print(f"{n}: step {r['step']}, {r['users']} users, recall@10 {r['recall@10']:.4f}, ndcg@10 {r['ndcg@10']:.4f}, "
              f"codes per level {[r[f'codes_l{i}'] for i in range(1, 5)]}")
    write({"runs": runs}, args.out)


def write(result, path):
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["check", "beam", "curve", "table"])
    p.add_argument("--root", help="run root holding data/ and sids/ (distrec prepare + tokenize)")
    p.add_argument("--code", default="runs/peer/IntRR", help="the released code's extract")
    p.add_argument("--pkgs", default="/tmp/intrrpkg", help="its pure-Python dependencies (pip --target)")
    p.add_argument("--align-weight", type=float, default=0.0, help="lambda; 0 as intrr_train_flat.yaml")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--threads", type=int, default=1)
    g = p.add_argument_group("check")
    g.add_argument("--windows", type=int, default=64, help="train windows for the forward check")
    g.add_argument("--users", type=int, default=256, help="validation users for the beam check")
    g.add_argument("--data-users", type=int, default=2000, help="users for the augmentation check")
    g.add_argument("--width", type=int, default=10, help="beam width (released topk: 10)")
    g.add_argument("--steps", type=int, default=20, help="training steps (compared, or of the curve)")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--global-batch", type=int, default=64)
    g.add_argument("--micro-batch", type=int, default=16)
    g = p.add_argument_group("beam")
    g.add_argument("--weights", help="a distrec IntRR checkpoint's weights file, .safetensors or .pt (trained on --root's SIDs)")
    g.add_argument("--widths", type=int, nargs="+", default=[10, 20])
    g.add_argument("--released-users", type=int, default=200, help="users the released beam also ranks")
    g = p.add_argument_group("table")
    g.add_argument("--runs", nargs="+", default=[], help="name=path of a curve JSON or a metrics.jsonl")
    g = p.add_argument_group("curve")
    g.add_argument("--eval-every", type=int, default=10)
    g.add_argument("--val-users", type=int, default=200, help="recall / NDCG at the last step on these users")
    g.add_argument("--log-every", type=int, default=1)
    g.add_argument("--seed", type=int, default=0)
    args, overrides = p.parse_known_args()
    torch.set_num_threads(args.threads)
    if args.mode != "table" and not args.root:
        p.error("--root is required")
    {"check": check, "beam": beam, "curve": curve, "table": table}[args.mode](args, overrides)


if __name__ == "__main__":
    main()
