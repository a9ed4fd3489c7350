"""`distrec run`: the whole pipeline, each stage writing its artifact for the next.

prepare -> embed -> tokenize -> train -> evaluate. Embedding and tokenization are skipped for
methods that use item ids only (SASRec, HSTU retrieval). Each stage is the same function its own
subcommand runs, so `distrec run` is exactly the sequence a user could type by hand.
"""

import importlib
import logging

from omegaconf import open_dict

log = logging.getLogger("distrec")

ID_ONLY_METHODS = {"sasrec", "hstu_retrieval"}


def pipeline(cfg) -> list[str]:
    stages = ["prepare", "embed", "tokenize", "train", "evaluate"]
    if cfg.method.name in ID_ONLY_METHODS:
        stages = [s for s in stages if s not in ("embed", "tokenize")]
    return stages


def run(cfg):
    result = None
    for stage in pipeline(cfg):
        log.info("=== distrec %s ===", stage)
        with open_dict(cfg):
            cfg.stage = stage
        result = importlib.import_module(f"distrec.stages.{stage}").run(cfg)
    return result
