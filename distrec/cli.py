"""`distrec <stage> [hydra overrides]`: one subcommand per pipeline stage, all configs via Hydra."""

from __future__ import annotations

import importlib
import os
import sys

from distrec.config import STAGES

USAGE = """usage: distrec <stage> [key=value ...] [--cfg job] [--multirun] [hydra options]

Stages:
{stages}

Examples:
  distrec run                                   # the whole pipeline on a generated catalog
  distrec prepare data=beauty                   # real data (see configs/data/)
  distrec train experiment=sasrec_beauty engine.num_workers=2
  distrec tokenize tokenizer=rq_kmeans --cfg job   # print the composed config, do nothing
  distrec train --multirun train.lr=1e-3,3e-3

Configs live in configs/; every key is typed and checked before work starts.
Docs: README.md, docs/.
"""


def usage() -> str:
    width = max(map(len, STAGES))
    return USAGE.format(stages="\n".join(f"  {k:<{width}}  {v}" for k, v in STAGES.items()))


# Hydra flags that take a value: their value must stay next to them when overrides are regrouped.
VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
               "--config-dir", "-cd", "--experimental-rerun"}


def hydra_argv(stage: str, args: list[str]) -> list[str]:
    """Flags first, then `stage=<stage>` and the user's overrides as one contiguous run, so
    `--multirun` (or `--cfg job`) may stand anywhere on the command line."""
    flags, overrides, i = [], [], 0
    while i < len(args):
        if args[i].startswith("-"):
            takes_value = args[i] in VALUE_FLAGS and i + 1 < len(args)
            flags += args[i:i + 1 + takes_value]
            i += 1 + takes_value
        else:
            overrides.append(args[i])
            i += 1
    return [*flags, f"stage={stage}", *overrides]


def absolute_paths(cfg) -> None:
    """Artifact paths become absolute before any work: Ray workers and subprocesses run elsewhere."""
    from pathlib import Path

    for key in cfg.paths:
        cfg.paths[key] = str(Path(cfg.paths[key]).resolve())


def run_stage(cfg) -> None:
    """Dispatch to `distrec.stages.<stage>.run(cfg)`; stage modules are imported lazily."""
    absolute_paths(cfg)
    module = importlib.import_module(f"distrec.stages.{cfg.stage}")
    return module.run(cfg)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        sys.exit(f"distrec: unknown stage '{stage}'. Choose one of: {', '.join(STAGES)} (distrec --help)")
    # OpenMP threads that spin while they wait (libgomp's default) slow training ~10x on cores shared
    # with other work (2 threads on 2 busy cores: 56 vs 618 samples/s). Read when torch loads libgomp.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import hydra

    from distrec.config import config_dir, register
    from distrec.errors import DistrecError

    register()

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def _main(cfg):
        try:
            return run_stage(cfg)
        except DistrecError as e:  # printed once, on stderr, without a traceback
            sys.exit(f"distrec {cfg.stage}: error: {e}")

    sys.argv = [f"distrec {stage}", *hydra_argv(stage, rest)]
    _main()


if __name__ == "__main__":
    main()
