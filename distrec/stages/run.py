"""`distrec run`: the whole pipeline, each stage writing its artifact for the next.

The stages and their order come from the stage graph (distrec.pipeline); methods over item ids only
(`Recommender.uses_sids` false: SASRec, HSTU retrieval) skip embedding and tokenization. Each stage
is the same function its own subcommand runs, so `distrec run` is exactly the sequence a user could
type by hand.
"""

import importlib
import logging
from pathlib import Path

from omegaconf import open_dict

from distrec.artifacts import wrote
from distrec.pipeline import Stage, stages_for

log = logging.getLogger("distrec")


def pipeline(cfg) -> list[Stage]:
    from distrec.models.recommender import method_class

    return stages_for(method_class(cfg.method.name, cfg.method.module).uses_sids)


def run(cfg):
    result = None
    stages = pipeline(cfg)
    for stage in stages:
        log.info("=== distrec %s ===", stage.name)
        with open_dict(cfg):
            cfg.stage = stage.name
        result = importlib.import_module(f"distrec.stages.{stage.name}").run(cfg)
    root = Path(cfg.paths.root)
    outputs = [Path(cfg.paths[s.writes]) for s in stages]
    shown = ", ".join(f"{p.relative_to(root)}/" if p.is_relative_to(root) else str(p) for p in outputs)
    wrote("run", f"{shown} (metrics: {Path(cfg.paths.eval) / 'metrics.json'})", root)
    return result
