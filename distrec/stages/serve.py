"""`distrec serve`: a trained model (paths.train, its SID table paths.sids, raw ids from paths.data
when prepared) answering `POST /recommend` on Ray Serve until Ctrl-C, SIGTERM or serve.duration_s.

The model is loaded here first, so a wrong path or checkpoint fails in seconds with its message, before
Ray starts. On the way out Serve and Ray are shut down: a local cluster leaves no process behind.
HTTP, batching and auth: distrec/parallel/serve.py; the JSON: distrec/inference/api.py.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from distrec.errors import ConfigError
from distrec.inference.predictor import Predictor

TOKEN_ENV = "DISTREC_SERVE_TOKEN"
TOKEN_FILE = "serve_token"


def check(s) -> None:
    for key, value, low in (("port", s.port, 1), ("max_k", s.max_k, 1), ("max_history", s.max_history, 1),
                            ("max_batch_size", s.max_batch_size, 1), ("replicas", s.replicas, 1)):
        if value < low:
            raise ConfigError(f"serve.{key}={value}: must be >= {low}")
    if s.port > 65535:
        raise ConfigError(f"serve.port={s.port}: not a TCP port (1-65535)")
    if s.batch_wait_timeout_s < 0 or (s.duration_s is not None and s.duration_s <= 0):
        raise ConfigError("serve.batch_wait_timeout_s must be >= 0 and serve.duration_s > 0 (or null)")


def token(s, root: Path) -> tuple[str, str]:
    """(the token, where a client finds it): serve.token, else $DISTREC_SERVE_TOKEN, else a new random one
    in <root>/serve_token, readable by this user only."""
    if s.token:
        return str(s.token), "serve.token"
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV], f"${TOKEN_ENV}"
    value, path = secrets.token_urlsafe(32), root / TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
        f.write(value + "\n")
    return value, str(path)


def run(cfg) -> dict:
    import torch

    from distrec.parallel.ray_env import apply_local_env, init_ray

    apply_local_env()  # before Ray is first imported (by distrec.parallel.serve): it reads them once
    from distrec.parallel.serve import start, stats, stop

    s = cfg.serve
    check(s)
    data = Path(cfg.paths.data)
    load = dict(train_dir=cfg.paths.train, sids_dir=cfg.paths.sids,
                data_dir=str(data) if (data / "manifest.json").exists() else None,
                checkpoint=str(s.checkpoint), decoding=str(s.decoding), beam_width=int(s.beam_width),
                exclude_history=bool(s.exclude_history), max_k=int(s.max_k), precision=str(s.precision),
                new_item_share=float(s.new_item_share),
                device="cuda" if torch.cuda.is_available() else "cpu")
    identity = Predictor.load(**(load | {"device": "cpu"})).identity  # fails here, before Ray, when it must
    secret, where = token(s, Path(cfg.paths.root))
    url = f"http://{'[' + s.host + ']' if ':' in s.host else s.host}:{s.port}"

    init_ray(cfg.cluster)
    try:
        handle = start(load, token=secret, host=s.host, port=int(s.port), replicas=int(s.replicas),
                       max_history=int(s.max_history), max_batch_size=int(s.max_batch_size),
                       batch_wait_timeout_s=float(s.batch_wait_timeout_s), local=not cfg.cluster.address)
        print(banner(identity, load, url, where, s), flush=True)
        started = time.monotonic()
        while s.duration_s is None or time.monotonic() - started < s.duration_s:
            time.sleep(0.5)
        answered = stats(handle)
    finally:
        stop()
    print(f"distrec serve: stopped after {s.duration_s:g} s (serve.duration_s); answered "
          f"{answered['requests']:,} requests in {answered['batches']:,} model calls")
    return {"url": url, "identity": identity, **answered}


def banner(identity: dict, load: dict, url: str, where: str, s) -> str:
    auth = f"$(cat {where})" if where.endswith(TOKEN_FILE) else (f"${TOKEN_ENV}" if where.startswith("$") else
                                                                "<serve.token>")
    return "\n".join([
        f"distrec serve: {identity['method']} (model {identity['model_hash']}, decoding {identity['decoding']}), "
        f"{identity['num_items']:,} items, {s.replicas} replica(s), raw ids {'on' if load['data_dir'] else 'off'}",
        f"  listening on {url}: POST /recommend (token), GET /healthz",
        f"  token: {where}" + (" (mode 0600)" if where.endswith(TOKEN_FILE) else ""),
        f"  try:   curl -s -H \"Authorization: Bearer {auth}\" -d '{{\"history\": [1, 2, 3], \"k\": 10}}' "
        f"{url}/recommend",
        "  stop:  " + (f"after {s.duration_s:g} s (serve.duration_s)" if s.duration_s else "Ctrl-C or SIGTERM")])
