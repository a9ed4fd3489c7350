"""What ACERec's Attentive Token Merger does in saved checkpoints: how sharply its heads attend, how
large its queries and attention logits have grown, and how much its latents differ between items.

A merger whose every head reads one token (entropy ~0) through a saturated softmax passes no gradient
to change which token, and latents that are nearly the same for every item carry little of it. This
loads each checkpoint's weights into the model composed from `experiment` and measures, on the first
`--items` catalog items:

- entropy: mean entropy (nats) of each head's attention over the m tokens (uniform = ln m);
- max_prob: mean of each head's largest attention weight;
- query_norm: mean norm of the queries entering the attention's projection;
- logit_spread: mean (max - min) of a head's attention logits over the m tokens;
- latent_cos_items: mean cosine between two different items' first latent (1 = item-blind);
- latent_norm, summary_norm, token_norm: mean norms of the latents, the item summaries, the tokens;
- recon_fidelity: mean cosine of the reconstructed token embeddings to the real ones (v2 decoder);
- last_item_overlap: on seeded training windows of at least 4 history items, the share of the top 10
  that the model's top 10 from the last history item alone has in common with the full history's
  (1 = the history before the last item changes nothing);
- next_item_ce / ce_last_item_only / ce_no_positions: on the same windows, the per-digit cross-entropy
  of the next item's codes from the full history, from the last history item alone, and from the full
  history with the backbone's position embeddings zeroed (equal to next_item_ce = order unused);
- input_share: at the prediction anchor, the norm of the backbone's input (slot content + embeddings)
  over the norm of the residual stream it ends as (near 1 = the blocks add little to the item itself).

    python bench/merger_probe.py runs/acerec_beauty/train/checkpoints/step-1400/weights.safetensors \
        --data runs/rpg_beauty/data --sids runs/rpg_beauty/sids --out bench/results/merger_probe.json

The merger's norms (input LayerNorms, per-head query/key norms) are read with `getattr`, so the script
also measures checkpoints of the merger before it had them (commit 1945683 and earlier: run it with that commit's `distrec` on the path).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distrec.config import compose  # noqa: E402
from distrec.data.batches import build_train_index, collate_train  # noqa: E402
from distrec.data.dataset import load_prepared  # noqa: E402
from distrec.models.recommender import Catalog, build_model  # noqa: E402
from distrec.tokenize.sid_table import SIDTable  # noqa: E402
from distrec.train.weights import read_weights  # noqa: E402
from loss_parts import seeded_windows  # noqa: E402  (the windows bench/loss_parts.py scores, for a seed)


@torch.no_grad()
def probe(model, items: torch.Tensor) -> dict:
    merger, attn = model.merger, model.merger.attn
    tokens = model.item_tokens(items)
    summary = model.item_summary(tokens)
    memory = getattr(merger, "norm_tokens", nn.Identity())(tokens + model.sub_pos)
    queries = merger.query_base + merger.query_offset(summary).view(-1, merger.k, summary.shape[-1])
    q = attn._heads(attn.q(getattr(merger, "norm_queries", nn.Identity())(queries)))
    k = attn._heads(attn.kv(memory).chunk(2, dim=-1)[0])
    q, k = getattr(attn, "q_norm", nn.Identity())(q), getattr(attn, "k_norm", nn.Identity())(k)
    logits = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim)  # [N, heads, k, m]
    probs = logits.softmax(-1)
    latents = model.merger(tokens + model.sub_pos, summary)
    first = F.normalize(latents[:, 0], dim=-1)
    off_diagonal = ~torch.eye(len(items), dtype=torch.bool)
    out = {"entropy": -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean(),
           "uniform_entropy": math.log(tokens.shape[1]),
           "max_prob": probs.max(-1).values.mean(),
           "query_norm": queries.norm(dim=-1).mean(),
           "logit_spread": (logits.max(-1).values - logits.min(-1).values).mean(),
           "latent_cos_items": (first @ first.T)[off_diagonal].mean(),
           "latent_norm": latents.norm(dim=-1).mean(), "summary_norm": summary.norm(dim=-1).mean(),
           "token_norm": tokens.norm(dim=-1).mean()}
    if model.recon is not None:
        out["recon_fidelity"] = F.cosine_similarity(model.recon(latents), tokens, dim=-1).mean()
    return {key: round(float(value), 4) for key, value in out.items()}


@torch.no_grad()
def next_item_ce(model, histories: torch.Tensor, targets: torch.Tensor) -> float:
    """Per-digit cross-entropy of the targets' codes after each history (its last position)."""
    logprobs = model.digit_logprobs({"input_ids": histories}).float()
    return round(-float(logprobs.gather(-1, model.sid.codes[targets].unsqueeze(-1)).mean()), 4)


@torch.no_grad()
def history_use(model, histories: torch.Tensor, targets: torch.Tensor) -> dict:
    """How much the model's next-item prediction reads the history before the last item, its order,
    and how much the backbone's blocks add to the anchor's own input."""
    seen = {}  # the backbone's input and final residual stream, caught during the full-history pass
    hooks = [model.backbone.register_forward_pre_hook(lambda _, args: seen.__setitem__("input", args[0])),
             model.backbone.ln_out.register_forward_pre_hook(lambda _, args: seen.__setitem__("stream", args[0]))]
    out = {"next_item_ce": next_item_ce(model, histories, targets)}
    for hook in hooks:
        hook.remove()
    out["input_share"] = round(float((seen["input"][:, -1].norm(dim=-1) / seen["stream"][:, -1].norm(dim=-1)).mean()), 4)
    last_only = torch.zeros_like(histories)
    last_only[:, -1] = histories[:, -1]
    out["ce_last_item_only"] = next_item_ce(model, last_only, targets)
    positions = model.backbone.pos.weight
    saved = positions.detach().clone()
    positions.data.zero_()
    out["ce_no_positions"] = next_item_ce(model, histories, targets)
    positions.data.copy_(saved)
    return out


@torch.no_grad()
def last_item_overlap(model, histories: torch.Tensor) -> float:
    full, _ = model.recommend({"input_ids": histories}, 10)
    last, _ = model.recommend({"input_ids": histories[:, -1:]}, 10)
    return round(sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(full, last)) / full.numel(), 4)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", nargs="+", help="checkpoint weights files (weights.safetensors), or 'init'")
    parser.add_argument("--data", required=True, help="the prepared data/ the runs trained on")
    parser.add_argument("--sids", required=True, help="their SID table")
    parser.add_argument("--experiment", default="acerec_beauty")
    parser.add_argument("--items", type=int, default=2000, help="the first N catalog items are probed")
    parser.add_argument("--windows", type=int, default=512, help="seeded training windows drawn for last_item_overlap")
    parser.add_argument("--out", type=Path, default=None, help="JSON of the results (merged into an existing file)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    prepared = load_prepared(args.data)
    catalog = Catalog(prepared.num_items, SIDTable.load(args.sids), prepared.item_counts())
    cfg = compose(["stage=train", f"experiment={args.experiment}"])
    items = torch.arange(1, min(args.items, prepared.num_items) + 1)
    data = prepared.sequence_data()
    index = build_train_index(data, cfg.model.max_history)
    windows = collate_train(data, index, seeded_windows(index, args.windows, 0), cfg.model.max_history)
    long_enough = (windows["input_ids"] > 0).sum(1) >= 4
    histories, targets = windows["input_ids"][long_enough], windows["target_ids"][long_enough, -1]
    results = json.loads(args.out.read_text()) if args.out and args.out.exists() else {}
    for spec in args.weights:
        model = build_model(cfg.model, cfg.method, catalog)
        if spec != "init":
            state = read_weights(Path(spec), "checkpoint weights", "pass a checkpoint's weights.safetensors")
            model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
        results[spec] = {**probe(model.eval(), items), "last_item_overlap": last_item_overlap(model, histories),
                         **history_use(model, histories, targets), "windows": len(histories)}
        print(spec, json.dumps(results[spec]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
        print(f"merger_probe: {args.out}")


if __name__ == "__main__":
    main()
