"""IntRR: a Recursive Assignment Network (RAN) walks the SID hierarchy inside the model, so every
history item is ONE token, and the next item's SID is decoded level by level from one backbone pass.

Item side (methods.md §3.1): u = Linear(UID embedding); level 1 input is u, level l > 1 input is
MLP_l([code vector chosen at l-1 ; u]); logits against the level's codebook / tau; straight-through
selection (hard code forward, the soft mixture's gradient, the codebook's included); the item token
is the sum of its selected code vectors. Because u drives the walk, items sharing a Stage-1 SID may
get different tokens ("redistribution"); the Stage-1 SID is only a soft target through L_aln.

User side: the backbone state h replaces u in the same RAN, teacher-forced on the target's true path
during training; at inference a beam search over the levels, masked by the SID table's prefix trie.

L = L_rec + lambda * L_aln: L_rec = sum over levels of CE(user logits, target SID digit);
L_aln = sum over levels of CE(item-side logits, the history item's Stage-1 digit), averaged as
released over every history item of every labelled prefix (`align_average=item`: each distinct item
once). The paper has lambda > 0 (default 0.1, the released model class's default); the released
experiment config sets 0, and then the item side collapses onto a handful of paths (`code_usage`).
Pure torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distrec.decoding.beam import constrained_beam_search
from distrec.models.backbones import build_backbone
from distrec.models.blocks.init import reinit
from distrec.models.methods.sid_common import PAD, SIDVocab, left_aligned_positions, trim_left_padding
from distrec.models.config import AlignAverage, IntRRInit
from distrec.models.presets import resolve_dims
from distrec.models.recommender import Recommender


def count_paths(codes: torch.Tensor) -> dict:
    """Codes [N, L] chosen for N items -> items, distinct codes at each level and distinct paths (code
    prefixes) through it."""
    out = {"items": len(codes)}
    for level in range(codes.shape[1]):
        out[f"codes_l{level + 1}"] = len(codes[:, level].unique())
        out[f"paths_l{level + 1}"] = len(codes[:, :level + 1].unique(dim=0))
    return out


def history_counts(input_ids: torch.Tensor, target_ids: torch.Tensor, unique: torch.Tensor) -> torch.Tensor:
    """How often each of the sorted ids `unique` is a history item of a labelled prefix: position j of a
    window is in the history of every labelled target at j or later (the released L_aln averages over
    these occurrences; every prefix is a row there)."""
    prefixes = (target_ids > 0).flip(1).cumsum(1).flip(1) * (input_ids > 0)
    return torch.zeros(len(unique), device=unique.device).index_add_(
        0, torch.searchsorted(unique, input_ids.reshape(-1)), prefixes.reshape(-1).float())


class RecursiveAssignmentNetwork(nn.Module):
    """Codebooks C_l [K_l, d] and the per-level input MLPs, shared by the item and user sides."""

    def __init__(self, codebook_sizes: list[int], d: int, hidden: int = 512, temperature: float = 1.0,
                 learn_temperature: bool = False, codebook_std: float | None = None):
        super().__init__()
        std = d ** -0.5 if codebook_std is None else codebook_std  # default: unit-norm code vectors
        self.codebooks = nn.ParameterList(nn.Parameter(torch.randn(size, d) * std) for size in codebook_sizes)
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * d, hidden), nn.ReLU(), nn.Linear(hidden, d)) for _ in codebook_sizes[1:])
        log_tau = torch.tensor(float(temperature)).log()
        self.log_tau = nn.Parameter(log_tau) if learn_temperature else None
        self.register_buffer("fixed_log_tau", log_tau, persistent=False)

    @property
    def levels(self) -> int:
        return len(self.codebooks)

    def temperature(self) -> torch.Tensor:
        return (self.log_tau if self.log_tau is not None else self.fixed_log_tau).exp()

    def level_input(self, level: int, guide: torch.Tensor, prev_code: torch.Tensor | None) -> torch.Tensor:
        """Level 1 reads the guide (UID projection or user state); deeper levels an MLP over
        [previous level's code vector ; guide]."""
        return guide if level == 0 else self.mlps[level - 1](torch.cat([prev_code, guide], dim=-1))

    def logits(self, level: int, x: torch.Tensor) -> torch.Tensor:
        return x @ self.codebooks[level].T / self.temperature()

    def code_vectors(self, level: int, codes: torch.Tensor) -> torch.Tensor:
        return self.codebooks[level][codes]

    def walk(self, guide: torch.Tensor, path: torch.Tensor | None = None):
        """Walk all levels from `guide` [N, d].

        `path` [N, L]: teacher forcing (the next level reads the true code's vector); None: the
        walk follows its own choices. Returns (fused embedding [N, d] = sum of straight-through
        selected codes, logits per level).
        """
        fused, prev, all_logits = 0, None, []
        for level in range(self.levels):
            logits = self.logits(level, self.level_input(level, guide, prev))
            codebook = self.codebooks[level]
            soft = logits.float().softmax(-1)
            soft_code, hard_code = soft.to(codebook.dtype) @ codebook, codebook[soft.argmax(-1)]
            # value: the hard code; gradient: the soft mixture's, to the logits and to every code row
            # (as released; a one-hot @ C would send the codebook's gradient to the selected row only)
            selected = soft_code + (hard_code - soft_code).detach()
            fused = fused + selected
            prev = self.code_vectors(level, path[:, level]) if path is not None else selected
            all_logits.append(logits)
        return fused, all_logits


class IntRR(Recommender):
    name = "intrr"
    loss_terms = ("rec", "aln")  # logged with the loss
    auto_decoding = "beam"
    extendable = False  # a UID embedding per item: items added after training have none

    def __init__(self, sid_table, backbone: nn.Module,
                 d_model: int, uid_dim: int = 512, hidden: int = 512, temperature: float = 1.0,
                 learn_temperature: bool = False, align_weight: float = 0.1, item_ground_truth: bool = False,
                 beam_width: int = 20, renormalise_beam: bool = True, align_average: str = "occurrence",
                 init: str = "released"):
        super().__init__()
        align_average, init = AlignAverage(align_average), IntRRInit(init)
        self.align_weight, self.item_ground_truth, self.beam_width = align_weight, item_ground_truth, beam_width
        self.renormalise_beam, self.align_average = renormalise_beam, align_average
        self.sid = SIDVocab(sid_table)  # codes + the prefix trie for constrained beam search
        self.uid = nn.Embedding(self.sid.num_items + 1, uid_dim, padding_idx=PAD)
        # released: torch's defaults, UID table and codebooks N(0, 1), so u = uid_proj(UID) is mostly the
        # item's own; from std 0.02 the uid_proj bias dominates u and the item side starts collapsed
        # (164 paths for Beauty's 12,101 items; docs/parity.md)
        released = init == "released"
        reinit(self.uid, lambda m: nn.init.normal_(m.weight, std=1.0 if released else 0.02))
        self.uid_proj = nn.Linear(uid_dim, d_model)
        self.ran = RecursiveAssignmentNetwork(self.sid.codebook_sizes, d_model, hidden, temperature, learn_temperature,
                                              codebook_std=1.0 if released else None)
        self.backbone = backbone

    @classmethod
    def from_config(cls, model_cfg, method_cfg, catalog):
        dims = resolve_dims(model_cfg)
        cfg = method_cfg.intrr
        return cls(catalog.sid_table, build_backbone(model_cfg), dims.d_model, cfg.uid_dim, cfg.hidden, cfg.temperature,
                   cfg.learn_temperature, cfg.align_weight, cfg.item_ground_truth, method_cfg.beam_width,
                   cfg.renormalise_beam, cfg.align_average, cfg.init)

    # ------------------------------------------------------------------ item side

    def item_tokens(self, item_ids: torch.Tensor):
        """Unique items of the batch -> one token each (the fused RAN embedding) + item-side logits."""
        unique, inverse = torch.unique(item_ids, return_inverse=True)
        fused, logits = self.walk_items(unique)
        return fused[inverse], unique, logits

    def walk_items(self, item_ids: torch.Tensor):
        """Items [N] -> the item side's RAN walk from their UID guides: (fused tokens [N, d], logits per level)."""
        path = self.sid.codes[item_ids] if self.item_ground_truth else None
        return self.ran.walk(self.uid_proj(self.uid(item_ids)), path)

    @torch.no_grad()
    def code_usage(self, chunk: int = 65536) -> dict:
        """The item side's assignment over the whole catalog: distinct codes at each level and distinct
        paths (code prefixes) through it. Collapse = few paths for many items (docs/intrr.md)."""
        items = torch.arange(1, self.sid.num_items + 1, device=self.uid.weight.device)
        return count_paths(torch.cat([torch.stack([lg.argmax(-1) for lg in self.walk_items(items[i:i + chunk])[1]], 1)
                                      for i in range(0, len(items), chunk)]))

    def encode(self, batch):
        """History -> backbone states [B, T', d] over the columns that are not padding in every row,
        the trimmed targets, the batch's unique items and their item-side logits."""
        names = [n for n in ("input_ids", "target_ids", "timestamps") if n in batch]
        trimmed = dict(zip(names, trim_left_padding(*(batch[n] for n in names), pad=batch["input_ids"] == PAD)))
        input_ids = trimmed["input_ids"]
        tokens, unique, item_logits = self.item_tokens(input_ids)
        pad = input_ids == PAD
        extra = {"positions": left_aligned_positions(pad)}
        if "timestamps" in trimmed and getattr(self.backbone, "uses_timestamps", False):
            extra["timestamps"] = trimmed["timestamps"]
        return self.backbone(tokens, pad=pad, **extra), trimmed.get("target_ids"), unique, item_logits

    # ------------------------------------------------------------------ training

    def forward(self, batch):
        states, target_ids, unique, item_logits = self.encode(batch)
        labelled = target_ids > 0  # every prefix of the history is a training sample
        h, path = states[labelled], self.sid.codes[target_ids[labelled]]
        _, user_logits = self.ran.walk(h, path)  # teacher forcing on the target's true path
        rec = sum(F.cross_entropy(logits.float(), path[:, level]) for level, logits in enumerate(user_logits))
        out = {"rec": rec.detach()}
        loss = rec
        if self.align_weight > 0:
            real = unique > 0
            stage1 = self.sid.codes[unique[real]]
            per_item = sum(F.cross_entropy(logits[real].float(), stage1[:, level], reduction="none")
                           for level, logits in enumerate(item_logits))
            if self.align_average == "occurrence":
                weight = history_counts(batch["input_ids"], batch["target_ids"], unique)[real]
                aln = (per_item * weight).sum() / weight.sum()
            else:
                aln = per_item.mean()
            loss = loss + self.align_weight * aln
            out["aln"] = aln.detach()
        out["loss"] = loss
        return out

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def recommend(self, batch, k: int):
        """One backbone pass, then beam search over the RAN levels with prefix-validity masking."""
        states = self.encode(batch)[0]
        rows = {"guide": states[:, -1]}  # the newest position (histories are left-padded)

        def step(level, prev_codes):
            prev = None if prev_codes is None else self.ran.code_vectors(level - 1, prev_codes)
            return self.ran.logits(level, self.ran.level_input(level, rows["guide"], prev)).float()

        def reorder(index):  # beams that survived the level, in their new order
            rows["guide"] = rows["guide"][index]

        B = rows["guide"].shape[0]
        return constrained_beam_search(step, reorder, B, self.sid.trie_children, max(self.beam_width, k), k,
                                       self.renormalise_beam)
