"""Configs of `distrec recommend` (batch top-K) and `distrec serve` (online endpoint)."""

from dataclasses import dataclass
from typing import Optional

from distrec.eval.config import Decoding


@dataclass
class RecommendConfig:
    k: int = 10  # items per user
    checkpoint: str = "best"  # best | last | a weights file
    decoding: Decoding = Decoding.auto  # what the method offers (Recommender.decodings)
    beam_width: int = 20
    exclude_history: bool = True  # leave out the items already in the user's history
    # parquet file or directory of histories: `user_id` (integers) and `items` (list of item ids, oldest first),
    # optionally `raw_user_id` (carried to the output); null = every user of the prepared data (paths.data), with
    # their whole sequence as history (the next item after everything known)
    input: Optional[str] = None
    raw_ids: bool = False  # `input`'s items are the catalog's raw ids (strings; needs paths.data)
    max_users: Optional[int] = None  # the first this many users of the input (null = all)
    batch_size: int = 512  # users per model call
    num_workers: int = 0  # 0 = this process (streamed, no Ray); N > 0 = N Ray Data actors, one model each
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    # with a SID table extended since training (`tokenize --extend`): up to this share of each list is kept for the
    # best-scoring items added since (eval.new_item_share, docs/inference.md); 0 = the model's ranking as is
    new_item_share: float = 0.0
    rows_per_file: int = 1_000_000  # users per output parquet file at most (Ray workers may write smaller ones)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # loopback by default; another address exposes the endpoint beyond this machine
    port: int = 8000
    # Bearer token every request must carry (header `Authorization: Bearer <token>`); null = the environment's
    # DISTREC_SERVE_TOKEN, else a new random one written to <paths.root>/serve_token (mode 0600)
    token: Optional[str] = None
    checkpoint: str = "best"
    decoding: Decoding = Decoding.auto
    beam_width: int = 20
    exclude_history: bool = True
    # with a SID table extended since training (`tokenize --extend`): up to this share of each list is kept for the
    # best-scoring items added since (eval.new_item_share, docs/inference.md); 0 = the model's ranking as is
    new_item_share: float = 0.0
    max_k: int = 100  # largest k a request may ask for
    max_history: int = 1000  # longest history a request may send (the model reads its last model.max_history)
    max_batch_size: int = 32  # requests answered by one model call (@serve.batch)
    batch_wait_timeout_s: float = 0.005  # how long a batch waits to fill
    replicas: int = 1
    precision: str = "fp32"
    duration_s: Optional[float] = None  # stop after this long (null = until Ctrl-C / SIGTERM)
