"""`distrec <stage> [hydra overrides]`: one subcommand per pipeline stage, all configs via Hydra."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import sys
from pathlib import Path

from distrec.pipeline import SUBCOMMANDS
from distrec.errors import out_of_memory

USAGE = """usage: distrec <stage> [key=value ...] [--cfg job] [--multirun] [hydra options]

Stages:
{stages}

Examples:
  distrec run                                   # the whole pipeline on a generated catalog
  distrec prepare data=beauty                   # real data (see configs/data/)
  distrec train experiment=sasrec_beauty engine.num_workers=2
  distrec tokenize tokenizer=rq_kmeans --cfg job   # print the composed config, do nothing
  distrec tokenize --extend                     # SIDs for items added since, from the frozen codebooks
  distrec train --multirun train.lr=1e-3,3e-3

Configs live in configs/; every key is typed and checked before work starts.
Docs: README.md, docs/.
"""


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    return USAGE.format(stages="\n".join(f"  {k:<{width}}  {v}" for k, v in SUBCOMMANDS.items()))


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


# distrec's own flags, as the overrides they stand for
STAGE_FLAGS = {("tokenize", "--extend"): "tokenizer.extend=${paths.sids}"}  # extend the table in place


def stage_flags(stage: str, args: list[str]) -> list[str]:
    return [STAGE_FLAGS.get((stage, a), a) for a in args]


def absolute_paths(cfg) -> None:
    """Artifact paths become absolute before any work: Ray workers and subprocesses run elsewhere."""
    for key in cfg.paths:
        cfg.paths[key] = str(Path(cfg.paths[key]).resolve())


def run_stage(cfg) -> None:
    """Dispatch to `distrec.stages.<stage>.run(cfg)`; stage modules are imported lazily."""
    from distrec.config import check_config

    check_config(cfg)
    absolute_paths(cfg)
    module = importlib.import_module(f"distrec.stages.{cfg.stage}")
    try:
        return module.run(cfg)
    except (MemoryError, RuntimeError) as e:  # a failed allocation: say what to lower, not a traceback
        oom = out_of_memory(e, cfg.stage)
        if oom is None:
            raise
        raise oom from None


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that clean-ups (`finally`, staged outputs) run."""


def _terminate(signum, frame):
    raise Terminated()


def _stopped_by(error: BaseException) -> tuple[str, int] | None:
    """(signal, exit code) when `error` is, or was caused by, SIGTERM or Ctrl-C (Ray wraps an exception
    raised by a signal handler during its own calls in a SystemError)."""
    while error is not None:
        if isinstance(error, Terminated):
            return "SIGTERM", 143
        if isinstance(error, KeyboardInterrupt):
            return "Ctrl-C", 130
        error = error.__cause__ or error.__context__
    return None


def _tree(root: Path, skip: Path) -> dict:
    """{path: (mtime, size)} of everything under `root` but `skip` (to see whether a stage wrote anything)."""
    out = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [name for name in dirs if Path(d, name) != skip]
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                st = os.stat(os.path.join(d, name))
                out[os.path.join(d, name)] = (st.st_mtime_ns, st.st_size)
    return out


def _log_dir():
    """This single run's Hydra log directory (runs/<name>/logs/<stage>-<time>), or None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return Path(hc.runtime.output_dir) if hc.mode == RunMode.RUN else None


def _forget_failed_run(root: Path, log_dir: Path | None, before: dict) -> None:
    """A stage that failed before writing anything leaves nothing behind: not even its log directory,
    nor `logs/` and the run directory when they are left empty."""
    if log_dir is None or not log_dir.is_relative_to(root) or _tree(root, log_dir) != before:
        return
    shutil.rmtree(log_dir, ignore_errors=True)
    for d in (log_dir.parent, root):
        with contextlib.suppress(OSError):
            d.rmdir()  # only when empty


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    stage, rest = argv[0], argv[1:]
    if stage not in SUBCOMMANDS:
        sys.exit(f"distrec: unknown stage '{stage}'. Choose one of: {', '.join(SUBCOMMANDS)} (distrec --help)")
    # OpenMP threads that spin while they wait (libgomp's default) slow training ~10x on cores shared
    # with other work (2 threads on 2 busy cores: 56 vs 618 samples/s). Read when torch loads libgomp.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import hydra

    from distrec.config import config_dir, register
    from distrec.errors import DistrecError

    register()

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def _main(cfg):
        root, log_dir = Path(cfg.paths.root).resolve(), _log_dir()
        before = _tree(root, log_dir) if log_dir else {}
        try:
            return run_stage(cfg)
        except DistrecError as e:  # printed once, on stderr, without a traceback
            _forget_failed_run(root, log_dir, before)
            sys.exit(f"distrec {cfg.stage}: error: {e}")
        except BaseException as e:
            _forget_failed_run(root, log_dir, before)
            stopped = _stopped_by(e)
            if stopped is None:
                raise
            print(f"distrec {cfg.stage}: stopped by {stopped[0]}; nothing half-written was kept"
                  + (" (run the same command to resume from the last checkpoint)" if cfg.stage == "train" else ""),
                  file=sys.stderr)
            sys.exit(stopped[1])

    sys.argv = [f"distrec {stage}", *hydra_argv(stage, stage_flags(stage, rest))]
    signal.signal(signal.SIGTERM, _terminate)
    _main()


if __name__ == "__main__":
    main()
