"""`distrec <stage> [hydra overrides]`: one subcommand per pipeline stage, all configs via Hydra."""

from __future__ import annotations

import importlib
import logging
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


def run_stage(cfg) -> None:
    """Dispatch to `distrec.stages.<stage>.run(cfg)`; stage modules are imported lazily."""
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

    import hydra

    from distrec.config import config_dir, register
    from distrec.errors import DistrecError

    register()

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def _main(cfg):
        try:
            return run_stage(cfg)
        except DistrecError as e:
            logging.getLogger("distrec").error("%s", e)
            sys.exit(f"distrec {cfg.stage}: error: {e}")

    sys.argv = [f"distrec {stage}", f"stage={stage}", *rest]
    _main()


if __name__ == "__main__":
    main()
