"""The stage graph, declared once: each stage, the artifacts it reads and the one it writes.

`distrec run`, `distrec sweep`, the CLI's help and the `paths.*` config all read it. An artifact is
named by its `paths.<key>`; its directory is `paths.root/<directory>` unless overridden.

    prepare -> data -> embed -> embeddings -> tokenize -> sids     (embed, tokenize: SID methods only)
               data + sids -> train -> train -> evaluate (+ data, sids) -> eval
    then, with a trained model:  recommend (+ data, sids) -> recommendations;  serve (an endpoint)

No imports: the CLI reads this before anything heavy loads.
"""

from __future__ import annotations

from dataclasses import dataclass

# paths.<key> -> its directory under paths.root
ARTIFACTS = {"data": "data", "embeddings": "embed", "sids": "sids", "train": "train", "eval": "eval",
             "recommendations": "recommend"}


@dataclass(frozen=True)
class Stage:
    name: str  # the subcommand and distrec/stages/<name>.py
    summary: str  # one line for `distrec --help`
    reads: tuple[str, ...]  # artifact keys; "sids" only for methods that use semantic IDs
    writes: str  # artifact key
    sids_only: bool = False  # runs only for methods that use semantic IDs (Recommender.uses_sids)
    shared: bool = False  # depends on the data, embed and tokenizer config only: sweep points share it


STAGES = (
    Stage("prepare", "read a raw dataset (or generate a catalog) into items/sequences parquet",
          reads=(), writes="data", shared=True),
    Stage("embed", "compute item embeddings (TF-IDF+SVD, fields, sentence-transformers, FAMAE, column)",
          reads=("data",), writes="embeddings", sids_only=True, shared=True),
    Stage("tokenize", "quantize embeddings into semantic IDs (--extend: SIDs for items added since training)",
          reads=("embeddings",), writes="sids", sids_only=True, shared=True),
    Stage("train", "train a model with the DeepSpeed engine (under Ray Train when engine.num_workers > 0)",
          reads=("data", "sids"), writes="train"),
    Stage("evaluate", "full-catalog evaluation of a trained checkpoint: metrics.json + predictions.parquet",
          reads=("data", "sids", "train"), writes="eval"),
)
# what a trained model is for: not part of `distrec run`
USES = (
    Stage("recommend", "batch top-K for every user (or a parquet of histories), streamed on Ray Data",
          reads=("data", "sids", "train"), writes="recommendations"),
)
# subcommands over the stages
COMMANDS = {
    "serve": "answer POST /recommend with a trained model on Ray Serve (127.0.0.1, token auth)",
    "sweep": "run a grid of train+evaluate jobs on Ray, fit scaling laws, plot them",
    "run": "the whole pipeline: " + " -> ".join(s.name for s in STAGES),
}
SUBCOMMANDS = {**{s.name: s.summary for s in STAGES + USES}, **COMMANDS}


def stages_for(uses_sids: bool) -> list[Stage]:
    """The stages a method runs, in order: item-ID methods skip embedding and tokenization."""
    return [s for s in STAGES if uses_sids or not s.sids_only]


def stage_named(name: str) -> Stage:
    return next(s for s in STAGES + USES if s.name == name)
