"""ACERec: long semantic IDs compressed by an Attentive Token Merger, an Intent Token per item,
and a dual-granularity objective (token-level MTP + item-level ISA, + reconstruction in v2).

Data flow for a history of L items, each with m OPQ codes (methods.md §1):

    codes [B, L, m] -> token embeddings E [B, L, m, d] (+ sub-space positions P)
    -> merger -> k latents Z [B, L, k, d];  summary s [B, L, d]
    -> sequence [Z_1; h_1; Z_2; h_2; ...] of L*(k+1) slots, block-causal
    -> backbone (Transformer or HSTU) -> state at each intent slot = user state after t items
    -> m heads -> per-digit logits against the tied token embeddings / gamma.

No official code exists; every choice the summaries leave open is a `method.acerec.*` option and
is listed in docs/acerec.md. Pure torch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distrec.decoding.scoring import holistic_topk
from distrec.errors import ConfigError
from distrec.models.backbones import build_backbone
from distrec.models.blocks.attention import MultiHeadAttention
from distrec.models.blocks.init import reinit, small_linear
from distrec.models.methods.rpg import DigitHeads, gpt2_dropouts, gpt2_init
from distrec.models.methods.sid_common import PAD, SIDVocab, left_aligned_positions, trim_left_padding
from distrec.models.config import Intent, LossPositions, Merger, Summary
from distrec.models.presets import resolve_dims
from distrec.models.recommender import Recommender



class Mlp(nn.Sequential):
    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class AttentiveTokenMerger(nn.Module):
    """k content-adaptive queries (learned base + offsets from the item summary) cross-attend to the
    item's m position-tagged token embeddings; an MLP with LayerNorm shapes the k latents.

    Perceiver-style, the queries and the tokens are layer-normed before they meet, and each head's
    queries and keys after projection (QK-norm). Without either, the query path (summary MLP ->
    offsets -> projection) grew to norms of ~1e5 on Beauty within 1,400 steps; with the first alone,
    the projections ran away instead. Either way every head came to read a single token of every item
    through a saturated softmax that passed no gradient to change which (docs/acerec.md, "The merger's
    attention")."""

    def __init__(self, d: int, m: int, k: int, n_heads: int):
        super().__init__()
        self.k = k
        self.query_base = nn.Parameter(torch.randn(k, d) * 0.02)  # small init: found essential by the community port
        self.query_offset = nn.Linear(d, k * d)
        reinit(self.query_offset, small_linear)
        self.norm_queries, self.norm_tokens = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = MultiHeadAttention(d, n_heads, cross=True, qk_norm=True)
        self.out = nn.Sequential(nn.LayerNorm(d), Mlp(d, 2 * d, d))

    def queries(self, summary: torch.Tensor) -> torch.Tensor:
        return self.query_base + self.query_offset(summary).view(-1, self.k, summary.shape[-1])

    def forward(self, tokens: torch.Tensor, summary: torch.Tensor) -> torch.Tensor:
        """tokens [N, m, d] (sub-space positions added), summary [N, d] -> latents [N, k, d]."""
        merged = self.attn(self.norm_queries(self.queries(summary)), memory=self.norm_tokens(tokens))
        return merged + self.out(merged)

    def attention_entropy(self, tokens: torch.Tensor, summary: torch.Tensor) -> float:
        """Mean entropy (nats) of each head's attention over the m tokens: ln m when it reads them
        evenly, 0 when every head reads a single token."""
        probs = self.attn.probabilities(self.norm_queries(self.queries(summary)), memory=self.norm_tokens(tokens))
        return float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())


class MeanMerger(nn.Module):
    """Ablation: the m tokens split into k consecutive groups, each mean-pooled."""

    def __init__(self, d: int, m: int, k: int, n_heads: int):
        super().__init__()
        if m % k:
            raise ConfigError(f"method.acerec.merger=mean needs m ({m}) divisible by k ({k})")
        self.k = k

    def forward(self, tokens, summary):
        N, m, d = tokens.shape
        return tokens.view(N, self.k, m // self.k, d).mean(2)


class MlpMerger(nn.Module):
    """Ablation: the flattened m tokens -> an MLP -> k latents."""

    def __init__(self, d: int, m: int, k: int, n_heads: int):
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(nn.LayerNorm(m * d), Mlp(m * d, 2 * d, k * d))

    def forward(self, tokens, summary):
        N, m, d = tokens.shape
        return self.mlp(tokens.reshape(N, m * d)).view(N, self.k, d)


class ConvMerger(nn.Module):
    """Ablation: a strided 1-D convolution over the m tokens (kernel = stride = m / k)."""

    def __init__(self, d: int, m: int, k: int, n_heads: int):
        super().__init__()
        if m % k:
            raise ConfigError(f"method.acerec.merger=conv needs m ({m}) divisible by k ({k})")
        self.conv = nn.Conv1d(d, d, kernel_size=m // k, stride=m // k)

    def forward(self, tokens, summary):
        return self.conv(tokens.transpose(1, 2)).transpose(1, 2)


MERGER_CLASSES = {Merger.atm: AttentiveTokenMerger, Merger.mean: MeanMerger, Merger.mlp: MlpMerger,
                  Merger.conv: ConvMerger}


class ReconDecoder(nn.Module):
    """v2's light decoder: m learned sub-space queries cross-attend to the k latents (pre-norm), then a
    residual MLP -> m embeddings. The queries stay in the residual stream so that each sub-space's output
    can differ: without them all m outputs are mixes of the same k vectors, and the reconstruction
    cosine stayed near 0.05 even on windows the model had memorised."""

    def __init__(self, d: int, m: int, n_heads: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(m, d) * 0.02)
        self.norm_queries, self.norm_latents = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = MultiHeadAttention(d, n_heads, cross=True, qk_norm=True)
        self.mlp = nn.Sequential(nn.LayerNorm(d), Mlp(d, 2 * d, d))
        self.out = nn.Linear(d, d)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        q = self.queries.expand(latents.shape[0], -1, -1)
        x = q + self.attn(self.norm_queries(q), memory=self.norm_latents(latents))
        return self.out(x + self.mlp(x))


def acerec_mask(num_blocks: int, k: int, intent: bool, device=None) -> torch.Tensor:
    """Block-causal `allowed` [T, T] over blocks of k latents (+1 intent slot).

    Latents of block t see each other and every slot of earlier blocks; the intent slot of block t
    sees its own block (latents and itself) and earlier blocks; nothing sees a later block, and a
    block's latents do not see its own intent slot (it is the prediction anchor).
    """
    width = k + int(intent)
    block = torch.arange(num_blocks, device=device).repeat_interleave(width)
    slot = torch.arange(width, device=device).repeat(num_blocks)
    is_intent = (slot == k) if intent else torch.zeros_like(slot, dtype=torch.bool)
    earlier = block.unsqueeze(1) > block.unsqueeze(0)
    same = block.unsqueeze(1) == block.unsqueeze(0)
    return earlier | (same & (~is_intent.unsqueeze(0) | is_intent.unsqueeze(1)))


class ACERec(Recommender):
    name = "acerec"
    loss_terms = ("mtp", "isa", "recon")  # logged with the loss
    auto_decoding = "holistic"

    def __init__(self, sid_table, backbone: nn.Module, d_model: int, n_heads: int,
                 k: int = 4, merger: str = "atm", intent: str = "summary", summary: str = "mlp", gamma: float = 0.03,
                 tau: float = 0.07, beta: float = 0.02, isa_weight: float = 0.1, recon_weight: float = 0.03,
                 item_counts=None, loss_positions: str = "all", score_chunk: int = 8192, token_dropout: float = 0.0):
        super().__init__()
        merger, intent, summary = Merger(merger), Intent(intent), Summary(summary)
        loss_positions = LossPositions(loss_positions)
        if len(set(sid_table.codebook_sizes)) != 1:
            raise ConfigError(f"method=acerec needs one codebook size for every digit (tokenizer=opq), "
                              f"got {list(sid_table.codebook_sizes)}")
        # The SID table as buffers (long unordered IDs: no trie); the data pipeline moves item ids only.
        self.sid = SIDVocab(sid_table, with_trie=False)
        self.m, self.M, self.k, self.d = self.sid.levels, self.sid.codebook_sizes[0], k, d_model
        self.intent, self.gamma, self.tau = intent, gamma, tau
        self.isa_weight, self.recon_weight = isa_weight, recon_weight
        self.loss_positions, self.score_chunk = loss_positions, score_chunk
        self.token_emb = nn.Embedding(self.sid.vocab_size, d_model, padding_idx=PAD)  # digit d code c: offsets[d] + c
        reinit(self.token_emb, lambda m: nn.init.normal_(m.weight, std=0.02))
        self.sub_pos = nn.Parameter(torch.randn(self.m, d_model) * 0.02)
        self.token_drop = nn.Dropout(token_dropout)
        # f_s: an MLP over the tokens' mean, or (summary=mean) the mean itself, which is RPG's item input
        self.summary = nn.Sequential(nn.LayerNorm(d_model), Mlp(d_model, 2 * d_model, d_model)) \
            if summary == Summary.mlp else nn.Identity()
        self.merger = MERGER_CLASSES[merger](d_model, self.m, k, n_heads)
        self.static_intent = nn.Parameter(torch.randn(d_model) * 0.02) if intent == "static" else None
        self.slot_emb = nn.Parameter(torch.randn(k + (intent != "none"), d_model) * 0.02)
        self.backbone = backbone
        self.heads = DigitHeads(self.m, d_model)
        self.recon = ReconDecoder(d_model, self.m, n_heads) if recon_weight > 0 else None
        # logQ-style popularity correction of ISA: b_j = beta * log f_j / max log f.
        # a copy: the counts may be a read-only array (through Ray's object store)
        counts = torch.ones(self.sid.num_items + 1) if item_counts is None else \
            torch.tensor(np.asarray(item_counts, dtype=np.float32))
        log_f = torch.log(counts.clamp(min=1.0))
        self.register_buffer("pop_bias", beta * log_f / log_f.max().clamp(min=1e-6), persistent=False)

    # ------------------------------------------------------------------ building blocks

    @classmethod
    def from_config(cls, model_cfg, method_cfg, catalog):
        if catalog.sid_table is None:
            raise ConfigError("method=acerec needs a SID table (run `distrec tokenize tokenizer=opq` first)")
        dims = resolve_dims(model_cfg)
        a = method_cfg.acerec
        width = a.k + (a.intent != "none")
        backbone = build_backbone(model_cfg, max_len=dims.max_history * width)
        if a.gpt2_init or a.embd_dropout is not None or a.attn_dropout is not None:
            if dims.backbone != "transformer":
                raise ConfigError("method.acerec.gpt2_init / embd_dropout / attn_dropout set up RPG's GPT-2: "
                                  f"they need model.backbone=transformer (got '{dims.backbone}')")
            if a.gpt2_init:
                gpt2_init(backbone)
            gpt2_dropouts(backbone, dims.dropout if a.embd_dropout is None else a.embd_dropout,
                          dims.dropout if a.attn_dropout is None else a.attn_dropout)
        return cls(catalog.sid_table, backbone, dims.d_model, dims.n_heads,
                   k=a.k, merger=a.merger, intent=a.intent, summary=a.summary, gamma=a.gamma, tau=a.tau, beta=a.beta,
                   isa_weight=a.isa_weight, recon_weight=a.recon_weight, item_counts=catalog.item_counts,
                   loss_positions=a.loss_positions, token_dropout=a.token_dropout)

    def item_tokens(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings of items [..., m, d] (each digit has its own codes)."""
        return self.token_emb(self.sid.item_tokens[item_ids])

    def item_summary(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.summary(tokens.mean(-2))

    def encode_items(self, item_ids: torch.Tensor):
        """item ids [N] -> (tokens [N, m, d], summary [N, d], latents [N, k, d]). The tokens returned are
        undropped (the reconstruction target); summary and merger read them through `token_drop`."""
        tokens = self.item_tokens(item_ids)
        seen = self.token_drop(tokens)
        summary = self.item_summary(seen)
        latents = self.merger(seen + self.sub_pos, summary)
        return tokens, summary, latents

    def user_states(self, input_ids: torch.Tensor, timestamps=None):
        """History [B, L] (left-padded; pass it trimmed of all-padding columns) -> user state after
        each item [B, L, d], plus the distinct history items with their tokens and latents (for L_Recon).

        Each distinct item (padding included) goes through the merger once: a batch of short,
        left-padded histories repeats items and padding many times, and the merger is a function
        of the item alone, so this is the same computation, gradients included (with
        `token_dropout`, one dropout mask per distinct item per batch instead of per occurrence).
        """
        B, L = input_ids.shape
        items, inverse = torch.unique(input_ids.reshape(-1), return_inverse=True)
        tokens, summary, latents = self.encode_items(items)
        slots = [latents[inverse]]
        if self.intent == "summary":
            slots.append(summary[inverse].unsqueeze(1))
        elif self.intent == "static":
            slots.append(self.static_intent.expand(inverse.shape[0], 1, -1))
        blocks = torch.cat(slots, dim=1) + self.slot_emb  # [B*L, width, d]
        width = blocks.shape[1]
        x = blocks.view(B, L * width, self.d)
        pad = (input_ids == PAD).repeat_interleave(width, dim=1)
        allowed = acerec_mask(L, self.k, self.intent != "none", x.device)
        kwargs = {"positions": left_aligned_positions(pad)}
        if timestamps is not None and getattr(self.backbone, "uses_timestamps", False):
            kwargs["timestamps"] = timestamps.repeat_interleave(width, dim=1)
        h = self.backbone(x, mask=allowed, pad=pad, **kwargs).view(B, L, width, self.d)
        # The anchor: the intent slot, or (intent=none) the last latent of the block.
        history = {"items": items, "inverse": inverse, "tokens": tokens, "latents": latents}
        return h[:, :, -1], history

    def digit_logits(self, states: torch.Tensor) -> torch.Tensor:
        """states [N, d] -> logits [N, m, M]: cosine to the tied digit token embeddings / gamma."""
        heads = F.normalize(self.heads(states).float(), dim=-1)  # [N, m, d]
        start = int(self.sid.offsets[0])
        table = self.token_emb.weight[start:start + self.m * self.M].float().view(self.m, self.M, self.d)
        return torch.einsum("nmd,mkd->nmk", heads, F.normalize(table, dim=-1)) / self.gamma

    # ------------------------------------------------------------------ training

    def forward(self, batch):
        extra = (batch["timestamps"],) if "timestamps" in batch else ()
        input_ids, target_ids, *extra, _ = trim_left_padding(batch["input_ids"], batch["target_ids"], *extra,
                                                             pad=batch["input_ids"] == PAD)
        states, history = self.user_states(input_ids, extra[0] if extra else None)
        labelled = target_ids > 0
        if self.loss_positions == "last":
            labelled = labelled & (torch.arange(labelled.shape[1], device=labelled.device) == labelled.shape[1] - 1)
        h, targets = states[labelled], target_ids[labelled]  # [N, d], [N]

        logits = self.digit_logits(h)
        mtp = F.cross_entropy(logits.reshape(-1, self.M), self.sid.codes[targets].reshape(-1))
        loss, out = mtp, {"mtp": mtp.detach()}
        if self.isa_weight > 0:
            isa = self.isa_loss(h, targets)
            loss = loss + self.isa_weight * isa
            out["isa"] = isa.detach()
        if self.recon is not None:
            recon = self.recon_loss(history)
            loss = loss + self.recon_weight * recon
            out["recon"] = recon.detach()
        out["loss"] = loss
        return out

    def recon_loss(self, history: dict) -> torch.Tensor:
        """1 - mean cosine between the history items' m token embeddings and their reconstruction
        from the k latents, averaged over every (non-padding) history occurrence."""
        occurrences = torch.bincount(history["inverse"], minlength=len(history["items"])).float()
        real = history["items"] != PAD
        rec = self.recon(history["latents"][real])
        cos = F.cosine_similarity(rec.float(), history["tokens"][real].detach().float(), dim=-1).mean(-1)
        weights = occurrences[real]
        return 1 - (cos * weights).sum() / weights.sum().clamp(min=1.0)

    def isa_loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """In-batch InfoNCE between intent states and next-item summaries, popularity-corrected.

        Candidates are the batch's distinct target items, so a repeated item is not its own negative.
        """
        items, label = torch.unique(targets, return_inverse=True)
        summary = self.item_summary(self.item_tokens(items))
        sim = F.normalize(h.float(), dim=-1) @ F.normalize(summary.float(), dim=-1).T
        return F.cross_entropy(sim / self.tau - self.pop_bias[items], label)

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def digit_logprobs(self, batch) -> torch.Tensor:
        extra = (batch["timestamps"],) if "timestamps" in batch else ()
        input_ids, *extra, _ = trim_left_padding(batch["input_ids"], *extra, pad=batch["input_ids"] == PAD)
        states, _ = self.user_states(input_ids, extra[0] if extra else None)
        return self.digit_logits(states[:, -1]).log_softmax(-1)  # [B, m, M]

    @torch.no_grad()
    def code_usage(self, probe: int = 4096) -> dict:
        """What the model predicts after a one-item history, for up to `probe` catalog items (evenly
        spaced): distinct top-1 codes per digit (min and mean over the m digits) and distinct top-1
        IDs. A collapsed model predicts the same codes whatever the history (docs/acerec.md). With the
        attentive merger, also `merger_entropy`: its attention entropy over the probed items' tokens."""
        was_training = self.training
        self.eval()  # no dropout
        n = self.sid.num_items
        items = torch.linspace(1, n, min(probe, n), device=self.sub_pos.device).round().long().unique()
        codes = torch.cat([self.digit_logprobs({"input_ids": chunk[:, None]}).argmax(-1)
                           for chunk in items.split(1024)])
        usage = {}
        if isinstance(self.merger, AttentiveTokenMerger):
            tokens = self.item_tokens(items)
            usage["merger_entropy"] = self.merger.attention_entropy(tokens + self.sub_pos, self.item_summary(tokens))
        self.train(was_training)
        per_digit = [len(codes[:, digit].unique()) for digit in range(self.m)]
        return {"items": len(items), "codes_min": min(per_digit), "codes_mean": sum(per_digit) / self.m,
                "paths": len(codes.unique(dim=0)), **usage}

    @torch.no_grad()
    def recommend(self, batch, k: int):
        """Holistic scoring: item score = sum over digits of the digit log-probs, top-k over the
        catalog (chunked, so a million-item catalog fits); no beam search."""
        return holistic_topk(self.digit_logprobs(batch), self.sid.codes, k, self.score_chunk, reduce="sum")

    @torch.no_grad()
    def fidelity(self, item_ids: torch.Tensor) -> float:
        """Compressor fidelity: mean cosine between the m token embeddings and their reconstruction
        from the k latents (1 = lossless). Needs the reconstruction decoder."""
        if self.recon is None:
            return math.nan
        tokens, _, latents = self.encode_items(item_ids)
        return F.cosine_similarity(self.recon(latents).float(), tokens.float(), dim=-1).mean().item()
