"""The JSON of `distrec serve`'s `POST /recommend`: a request body in, a checked `Query` out; the
answers of a batch of queries. Pure Python over a `Predictor`: the Ray Serve deployment
(distrec/parallel/serve.py) only routes, authenticates and batches.

    {"history": [12, 40, 7], "k": 10}                           dense item ids (1..num_items), oldest first
    {"history": ["B0001", "B0002"], "raw_ids": true, "k": 10}   the catalog's raw ids (needs the prepared data)
    "user_id" (optional, an integer >= 0): passed to the model (TIGER's user token) and echoed back

    -> {"items": [...], "scores": [...], "raw_items": [...] (with the prepared data), "model": {...}}

Every request the model cannot answer raises `RequestError` with what is wrong (the server's 400).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from distrec.inference.predictor import Predictor, RequestError

DEFAULT_K = 10  # a request without "k" (at most the server's max_k)
FIELDS = ("history", "k", "raw_ids", "user_id")
EXAMPLE = '{"history": [12, 40, 7], "k": 10}'


@dataclass(frozen=True)
class Query:
    history: list[int]  # dense item ids, oldest first
    k: int
    user_id: int | None = None


def _integer(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse(body: bytes, predictor: Predictor, max_history: int) -> Query:
    """The query of one request body, checked against the model (RequestError says what is wrong)."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"the body is not JSON ({e}); send e.g. {EXAMPLE}") from None
    if not isinstance(request, dict):
        raise RequestError(f"the body must be a JSON object, e.g. {EXAMPLE}; got a {type(request).__name__}")
    unknown = [key for key in request if key not in FIELDS]
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; a request has {list(FIELDS)}")
    if "history" not in request:
        raise RequestError(f"missing field 'history' (the user's items, oldest first), e.g. {EXAMPLE}")
    history, raw = request["history"], request.get("raw_ids", False)
    if not isinstance(raw, bool):
        raise RequestError(f"'raw_ids' must be true or false, got {raw!r}")
    if not isinstance(history, list):
        raise RequestError(f"'history' must be a list of item ids, got {type(history).__name__}")
    if not history:
        raise RequestError("'history' is empty: send at least one item")
    if len(history) > max_history:
        raise RequestError(f"'history' has {len(history)} items, more than this server takes ({max_history}, "
                           "serve.max_history); the model reads only the last "
                           f"{predictor.max_history}: send those")
    k = request.get("k", min(DEFAULT_K, predictor.max_k, predictor.num_items))
    user_id = request.get("user_id")
    if user_id is not None and not (_integer(user_id) and 0 <= user_id < 2**63):
        raise RequestError(f"'user_id' must be an integer >= 0, got {user_id!r}")
    if raw:
        bad = [x for x in history if not (isinstance(x, str) or _integer(x))]
        if bad:
            raise RequestError(f"'history' with raw_ids: raw item ids are strings; got {bad[:5]}")
        history = predictor.item_ids(history)
    elif any(isinstance(x, str) for x in history):
        raise RequestError("'history' holds strings: dense item ids are integers; for the catalog's raw ids "
                           'send "raw_ids": true')
    try:
        predictor.check([history], k)
    except RequestError as e:  # one request: "history 0" is its 'history'
        raise RequestError(str(e).replace("history 0", "'history'", 1)) from None
    return Query(history=list(history), k=k, user_id=user_id)


def model_identity(predictor: Predictor) -> dict:
    """What answers, without local paths (sent with every answer and by /healthz)."""
    return {key: predictor.identity[key] for key in ("method", "model_hash", "sid_hash", "decoding")}


def answer(predictor: Predictor, query: Query, ids: np.ndarray, scores: np.ndarray) -> dict:
    """One query's answer from its row of `Predictor.recommend`; slots the decoder left empty (id 0) are
    dropped (their score, -inf, is not JSON)."""
    keep = ids != 0
    ids, scores = ids[keep], scores[keep]
    out = {"items": ids.tolist(), "scores": scores.astype(float).tolist()}
    if predictor.raw_ids is not None:
        out["raw_items"] = predictor.raw(ids).tolist()
    if query.user_id is not None:
        out["user_id"] = query.user_id
    out["model"] = model_identity(predictor)
    return out


def answer_all(predictor: Predictor, queries: list[Query]) -> list[dict | Exception]:
    """The answers of checked queries: one model call per distinct k (a beam decoder's top-k need not be
    a longer top-k's head). A failing call fails its own queries only: they get the exception."""
    out: list[dict | Exception] = [None] * len(queries)
    for k in sorted({q.k for q in queries}):
        rows = [i for i, q in enumerate(queries) if q.k == k]
        users = [queries[i].user_id or 0 for i in rows]
        try:
            ids, scores = predictor.recommend([queries[i].history for i in rows], k, user_ids=users, check=False)
        except Exception as e:  # noqa: BLE001 - answered as a 500 for these queries alone
            for i in rows:
                out[i] = e
            continue
        for row, i in enumerate(rows):
            out[i] = answer(predictor, queries[i], ids[row], scores[row])
    return out
