"""A trained model answering requests: histories in, top-K items out.

`distrec recommend` (batch, on Ray Data) and `distrec serve` (online, on Ray Serve) both hold one
`Predictor` per worker; it is pure torch + numpy (no Ray), so it also runs in a notebook:

    predictor = Predictor.load("runs/beauty/train", data_dir="runs/beauty/data")
    items, scores = predictor.recommend([[12, 40, 7], [3]], k=10)     # dense item ids, best first
    predictor.item_ids(["B0001", "B0002"])                           # raw ids -> dense ids

A request that cannot be answered raises `RequestError` naming what is wrong (the server answers it
with a 400); nothing is dropped silently. With a SID table extended since training (`distrec tokenize
--extend`), the items added since are recommended too (methods whose parameters do not depend on the
catalog: `Recommender.extendable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from distrec.errors import DistrecError
from distrec.eval.evaluator import drop_history, precision_context, recommend_in_pieces
from distrec.eval.new_items import candidate_lists, with_new_items
from distrec.eval.protocol import check_share


class RequestError(DistrecError):
    """A request that cannot be answered: an empty history, an unknown item, k out of range."""


class Predictor:
    def __init__(self, model, *, num_items: int, max_history: int, identity: dict, raw_ids=None,
                 exclude_history: bool = True, max_k: int = 1000, precision: str = "fp32",
                 beam_rows: int | None = 2048, new_items: tuple[int, float] | None = None):
        self.model, self.num_items, self.max_history = model, num_items, max_history
        self.identity = identity  # what answers: method, hashes, checkpoint, decoding (recorded with every output)
        self.raw_ids = raw_ids  # np.ndarray of str [num_items + 1] (row 0 = ""), or None without prepared data
        self._dense = {r: i for i, r in enumerate(raw_ids)} if raw_ids is not None else None
        self.exclude_history, self.max_k = exclude_history, max_k
        self.precision, self.beam_rows = precision, beam_rows
        self.device = next(model.parameters()).device
        self.new_items = new_items  # (first new item id, share of each list kept for new items) after an extension

    @classmethod
    def load(cls, train_dir: str | Path, *, sids_dir: str | Path | None = None, data_dir: str | Path | None = None,
             checkpoint: str = "best", decoding: str = "auto", beam_width: int = 20, exclude_history: bool = True,
             max_k: int = 1000, precision: str = "fp32", beam_rows: int | None = 2048, device: str = "cpu",
             new_item_share: float = 0.0):
        """The model of `train_dir` (with its SID table, or the extension of it at `sids_dir`), and the raw
        ids of the prepared data at `data_dir` when given (for requests in raw ids and raw-id outputs).
        `new_item_share`: up to that share of each list for the items added since training (NewItemShare)."""
        from distrec.train.export import TrainedModel

        check_share(new_item_share, "new_item_share")  # before the model is read
        trained = TrainedModel(train_dir)
        sid_table = trained.sid_table(sids_dir)
        model = trained.load(checkpoint, sids_dir, device)
        model.use_decoding(decoding, beam_width)
        new_items = trained.new_items(sid_table)
        num_items = trained.num_items + new_items
        raw_ids = None
        if data_dir is not None:
            from distrec.data.dataset import load_prepared

            data = load_prepared(data_dir, sequences=False, item_columns=["raw_id"])  # not every user per worker
            trained.check_data(data, sid_table)
            raw_ids = np.asarray([""] + data.items.column("raw_id").cast("string").to_pylist(), dtype=object)
        identity = {"method": trained.info["method"]["name"], "model_hash": trained.info.get("model_hash"),
                    "train_dir": str(Path(train_dir).resolve()), "checkpoint": checkpoint,
                    "decoding": model.decoding_name, "beam_width": getattr(model, "beam_width", None),
                    "sid_hash": sid_table.content_hash if sid_table is not None else None,
                    "trained_sid_hash": trained.sid_hash, "num_items": num_items,
                    "new_items": new_items, "new_item_share": new_item_share,
                    "exclude_history": exclude_history}
        return cls(model, num_items=num_items, max_history=int(trained.info["model"]["max_history"]),
                   identity=identity, raw_ids=raw_ids, exclude_history=exclude_history, max_k=max_k,
                   precision=precision, beam_rows=beam_rows,
                   new_items=(trained.num_items + 1, new_item_share) if new_items else None)

    # ------------------------------------------------------------------ requests

    def item_ids(self, raw: Sequence) -> list[int]:
        """Dense item ids of raw ids (the catalog's own), in order; RequestError names the unknown ones."""
        if self._dense is None:
            raise RequestError("raw item ids need the prepared data the model was trained on (its items table); "
                               "start with the data directory, or send dense item ids")
        unknown = [r for r in raw if str(r) not in self._dense or str(r) == ""]
        if unknown:
            raise RequestError(f"{len(unknown)} unknown raw item id(s): {unknown[:5]}")
        return [self._dense[str(r)] for r in raw]

    def check(self, histories: Sequence[Sequence[int]], k: int) -> None:
        """RequestError for what would make `recommend` fail or answer wrongly."""
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= min(self.max_k, self.num_items):
            raise RequestError(f"k must be an integer in [1, {min(self.max_k, self.num_items)}], got {k!r}")
        for i, history in enumerate(histories):
            if len(history) == 0:
                raise RequestError(f"history {i} is empty: send at least one item")
            bad = [x for x in history if isinstance(x, bool) or not isinstance(x, (int, np.integer))
                   or not 1 <= x <= self.num_items]
            if bad:
                raise RequestError(f"history {i}: {len(bad)} item id(s) outside the catalog's 1..{self.num_items}: "
                                   f"{bad[:5]}")

    def batch(self, histories: Sequence[Sequence[int]], user_ids: Sequence[int] | None = None) -> dict:
        """The model's input: each history's last `max_history` items, left-padded with 0."""
        T = self.max_history
        input_ids = np.zeros((len(histories), T), np.int64)
        for row, history in enumerate(histories):
            tail = np.asarray(history, np.int64)[-T:]
            input_ids[row, T - len(tail):] = tail
        users = np.zeros(len(histories), np.int64) if user_ids is None else np.asarray(user_ids, np.int64)
        return {"input_ids": torch.from_numpy(input_ids).to(self.device),
                "user_ids": torch.from_numpy(users).to(self.device)}

    @torch.no_grad()
    def recommend(self, histories: Sequence[Sequence[int]], k: int, user_ids: Sequence[int] | None = None,
                  check: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (item ids int64 [B, k], scores float32 [B, k]) after each history, best first; with
        `exclude_history`, items of the history are left out. A row has fewer than k valid items only
        when the decoder returned fewer (then id 0, score -inf)."""
        if check:
            self.check(histories, k)
        batch = self.batch(histories, user_ids)
        width = min(k + (self.max_history if self.exclude_history else 0), self.num_items)
        share = self.new_items is not None and self.new_items[1] > 0
        with precision_context(self.device, self.precision):
            if share:
                ids, scores = candidate_lists(
                    lambda b, n, **kw: recommend_in_pieces(self.model, b, n, self.beam_rows, **kw), self.model,
                    batch, width, *self.new_items, self.num_items)
            else:
                ids, scores = recommend_in_pieces(self.model, batch, width, self.beam_rows)
        scores = scores.float()
        if self.exclude_history:
            ids, scores = drop_history(ids, scores, batch["input_ids"])
        if share:
            ids, scores = with_new_items(ids, scores, *self.new_items, k)
        ids, scores = ids[:, :k], scores[:, :k]
        ids = torch.where(torch.isfinite(scores), ids, 0)
        if ids.shape[1] < k:  # a decoder that found fewer items than asked
            pad = k - ids.shape[1]
            ids = torch.cat([ids, ids.new_zeros(len(ids), pad)], 1)
            scores = torch.cat([scores, scores.new_full((len(scores), pad), float("-inf"))], 1)
        return ids.cpu().numpy(), scores.cpu().numpy()

    def raw(self, item_ids: np.ndarray) -> np.ndarray:
        """Raw ids of dense ids (any shape; id 0 -> ""); needs the prepared data."""
        if self.raw_ids is None:
            raise RequestError("raw item ids need the prepared data (its items table)")
        return self.raw_ids[item_ids]
