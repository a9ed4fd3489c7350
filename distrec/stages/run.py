"""`distrec run`: the whole pipeline, each stage writing its artifact for the next.

prepare -> embed -> tokenize -> train -> evaluate. Embedding and tokenization are skipped for
methods that use item ids only (SASRec, HSTU retrieval). Each stage is the same function its own
subcommand runs, so `distrec run` is exactly the sequence a user could type by hand.
"""

import importlib
import logging
from pathlib import Path

from omegaconf import open_dict

from distrec.artifacts import wrote

log = logging.getLogger("distrec")

ID_ONLY_METHODS = {"sasrec", "hstu_retrieval"}
OUTPUT = {"prepare": "data", "embed": "embeddings", "tokenize": "sids", "train": "train", "evaluate": "eval"}  # paths.*


def pipeline(cfg) -> list[str]:
    stages = ["prepare", "embed", "tokenize", "train", "evaluate"]
    if cfg.method.name in ID_ONLY_METHODS:
        stages = [s for s in stages if s not in ("embed", "tokenize")]
    return stages


def run(cfg):
    result = None
    stages = pipeline(cfg)
    for stage in stages:
        log.info("=== distrec %s ===", stage)
        with open_dict(cfg):
            cfg.stage = stage
        result = importlib.import_module(f"distrec.stages.{stage}").run(cfg)
    root = Path(cfg.paths.root)
    outputs = [Path(cfg.paths[OUTPUT[s]]) for s in stages]
    shown = ", ".join(f"{p.relative_to(root)}/" if p.is_relative_to(root) else str(p) for p in outputs)
    wrote("run", f"{shown} (metrics: {Path(cfg.paths.eval) / 'metrics.json'})", root)
    return result
