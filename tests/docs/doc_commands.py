"""The commands of README.md and docs/*.md, and how the docs-check (test_documented_commands.py) checks them.

A block is a fenced ```bash block, an inline code span that is a command (`distrec <stage> ...`,
`python <script> ...`), or the command spans of a marked table's rows. An HTML comment on the line before a block says how it is checked,
`<!-- docs-check: KIND -->`; `<!-- docs-check default: KIND -->` sets it for the later blocks of the file.
- run (the default of bash blocks): run as written by bash (set -e, pipefail) in a fresh copy of the
  checkout's tracked files (a clean runs/), DISTREC_DATA set, one block per copy, its lines in order.
  It runs in the test's environment: `python3 -m venv`, `. .venv/bin/activate` and `pip` do nothing there
  (.ci/run installs the environment as the README says).
- slow: the same, only under `pytest -m slow` (longer than the default run allows).
- record (the default of inline spans): a record of a measured run, or a command for a cluster, a GPU or
  another package. Bash expands the block without running anything (every command is caught by
  `command_not_found_handle`); each `distrec <stage> ...` must compose with its exact overrides and pass
  the stage's static checks (a stage after a `distrec prepare` of the block must read the data it wrote),
  each script it calls must exist and its argparse must take its flags.
- template: a form with placeholders (`<stage>`, `[--flag]`); not checked.
Run and slow blocks get the record check first. A bare `...` word stands for the rest of a command shown
above it and is left out of the check.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KINDS = ("run", "slow", "record", "template")
MARK = re.compile(r"^<!-- docs-check( default)?: (\w+)(?:: .*)? -->$")  # an optional `: why` after the kind
FENCE = re.compile(r"^```(\w*)\s*$")
SHELLS = ("bash", "sh", "shell")
PYTHONS = ("python", "python3", ".venv/bin/python")
# A command in an inline code span: a stage (not `distrec train:`, a message) or a script.
SPAN = re.compile(r"`((?:distrec (?:prepare|embed|tokenize|train|evaluate|recommend|serve|sweep|run)(?: [^`]*)?)"
                  r"|(?:(?:python|\.venv/bin/python) (?:-m )?[\w./-]+[^`]*))`")


# Prepended to a run block: it runs in the test's environment, which .ci/run installs as the README says.
ENVIRONMENT = ("python3() { if [ \"$1 $2\" = '-m venv' ]; then return 0; fi; command python3 \"$@\"; }\n"
               "pip() { echo \"docs-check: 'pip $*' skipped: the test's environment is installed\"; }\n")


@dataclass
class Block:
    file: str  # relative to the repository
    line: int  # of the fence, or of the span
    kind: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The command blocks of one markdown file, in order."""
    name, lines = str(path.relative_to(REPO)), path.read_text().splitlines()
    found, default, mark, fence, body, table = [], "run", None, None, [], False
    for number, line in enumerate(lines, 1):
        if fence is not None:  # inside a fenced block
            if line.strip() == "```":
                if fence[1] in SHELLS:
                    found.append(Block(name, fence[0], mark or default, "\n".join(body) + "\n"))
                fence, mark = None, None
            else:
                body.append(line)
            continue
        if m := MARK.match(line.strip()):
            if m.group(2) not in KINDS:
                raise ValueError(f"{name}:{number}: docs-check kind '{m.group(2)}'; choose one of {KINDS}")
            if m.group(1):
                default = m.group(2)
            else:
                mark = m.group(2)
            continue
        if m := FENCE.match(line.strip()):
            fence, body = (number, m.group(1)), []
            continue
        spans = [s for s in SPAN.findall(line) if "<" not in s and " " in s]  # not `distrec <stage>`, `distrec train`
        if mark and line.startswith("|"):  # a marked table: the commands of its rows are one block
            if found and found[-1].kind == mark and table:
                found[-1].text += "".join(s + "\n" for s in spans)
            elif spans:
                found.append(Block(name, number, mark, "".join(s + "\n" for s in spans)))
            table = True
            continue
        if table:
            mark, table = None, False
        found += [Block(name, number, mark or "record", span + "\n") for span in spans]
        if line.strip():
            mark = None  # a mark applies to the block right after it
    return found


def all_blocks() -> list[Block]:
    return [b for path in doc_files() for b in blocks(path)]


def expand(text: str) -> list[list[str]]:
    """The argv of every command of a shell block, expanded by bash as written, without running any."""
    words = set(re.findall(r"(?<![\w$/.{-])([\w.-]*[\w]/[\w./-]*)", text))  # path-like words: maybe commands
    stubs = "".join(f"function {w} {{ command_not_found_handle {w} \"$@\"; }}\n" for w in sorted(words))
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "argv"
        # The commands of a pipeline run at once, and bash flushes printf at each newline: each argv goes
        # out as one newline-free line (\x1d for newline, \x1f between words) so argvs never interleave.
        script = ("command_not_found_handle() { local a=(\"${@//$'\\n'/$'\\x1d'}\") line; "
                  "printf -v line '%s\\x1f' \"${a[@]}\"; printf '%s\\x1e\\n' \"$line\" >> \"$DOCS_CHECK_LOG\"; }\n"
                  "function . { command_not_found_handle . \"$@\"; }\n"
                  "function source { command_not_found_handle source \"$@\"; }\n" + stubs + text)
        done = subprocess.run(["/bin/bash", "-c", script], cwd=tmp, capture_output=True, text=True, timeout=60,
                              env={"PATH": str(Path(tmp) / "empty"), "DOCS_CHECK_LOG": str(log), "HOME": tmp,
                                   "PWD": tmp})
        if done.returncode or done.stderr:
            raise AssertionError(f"bash could not read the block: {done.stderr.strip()} (exit {done.returncode})")
        raw = log.read_text() if log.exists() else ""
    argvs = []
    for line in raw.split("\n")[:-1]:  # not splitlines(): it also splits at \x1d-\x1e
        *words, end = line.replace("\x1d", "\n").split("\x1f")
        assert end == "\x1e", f"an argv was cut in the log: {line!r}"
        argvs.append(words)
    return argvs


def compose_all(stage: str, args: list[str]) -> list:
    """The configs a `distrec <stage> args` command composes (one per point of a --multirun sweep)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from distrec.cli import hydra_argv, stage_flags
    from distrec.config import compose

    argv = hydra_argv(stage, stage_flags(stage, [a for a in args if a != "..."]))
    overrides = argv[argv.index(f"stage={stage}"):]
    if "--multirun" not in argv and "-m" not in argv:
        return [compose(overrides)]
    choices = []
    for text, parsed in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        if parsed.is_sweep_override():
            key = parsed.get_key_element()
            choices.append([f"{key}={v}" for v in parsed.sweep_string_iterator()])
        else:
            choices.append([text])
    return [compose(list(point)) for point in itertools.product(*choices)]


def check_stage(argv: list[str]) -> list:
    """`distrec <stage> ...`: composes with its exact overrides and passes the static checks."""
    import torch
    from omegaconf import open_dict

    from distrec.pipeline import SUBCOMMANDS
    from distrec.train.loop import check_train_config

    if len(argv) < 2 or argv[1] not in SUBCOMMANDS:
        raise AssertionError(f"`{' '.join(argv)}`: not a stage; choose one of {list(SUBCOMMANDS)}")
    configs = compose_all(argv[1], argv[2:])
    for cfg in configs:
        if argv[1] in ("train", "run", "sweep"):
            if cfg.engine.use_gpu and not torch.cuda.is_available():
                with open_dict(cfg):  # a command for a GPU host: checked as it would be there
                    cfg.engine.use_gpu = False
            check_train_config(cfg)
    return configs


def check_script(argv: list[str]) -> None:
    """`python <script> ...`, `python -m <module> ...` or `<script> ...`: the script exists, and one that
    parses flags with argparse takes these (parse_flags)."""
    if argv[0] in PYTHONS:
        if argv[1] == "-c":
            return
        module = argv[1] == "-m"
        target, args = argv[1 + module], argv[2 + module:]
        if module and not target.startswith("distrec"):
            return  # python3 -m venv, pip, ...: not the project's
        path = REPO / (target.replace(".", "/") + ".py" if module else target)
    else:
        module, target, args, path = False, argv[0], argv[1:], REPO / argv[0]
    if not path.is_file():
        raise AssertionError(f"`{' '.join(argv)}`: {path.relative_to(REPO)} does not exist")
    if argv[0] not in PYTHONS and not os.access(path, os.X_OK):
        raise AssertionError(f"`{' '.join(argv)}`: {target} is not executable")
    if "--" in args:  # `launch/submit.py [options] -- distrec ...`: the options, then the command it sends
        args, sent = args[:args.index("--")], args[args.index("--") + 1:]
        if sent[:1] == ["distrec"]:
            check_stage(sent)
    if "argparse" in path.read_text(errors="replace"):
        parse_flags(path, module and target, args)


class Parsed(Exception):
    pass


def parse_flags(path: Path, module: str | None, args: list[str]) -> None:
    """Run the script in this process up to its `parse_args` with these args, and stop there: the flags
    parse (argparse refuses an unknown one) and nothing of the script's work runs."""
    import argparse
    import contextlib
    import io
    import runpy
    from unittest import mock

    parser = argparse.ArgumentParser
    parse_args, parse_known_args, inside = parser.parse_args, parser.parse_known_args, []

    def parse_and_stop(self, *a, **k):  # parse_args calls parse_known_args, then refuses what is left
        inside.append(1)
        parse_args(self, *a, **k)
        raise Parsed()

    def parse_known_and_stop(self, *a, **k):  # a script that passes the rest on (as Hydra overrides)
        result = parse_known_args(self, *a, **k)
        if inside:
            return result
        raise Parsed()

    saved, stderr = (sys.argv[:], sys.path[:]), io.StringIO()
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(path.parent))  # as `python <script>` does
    try:
        with mock.patch.object(parser, "parse_args", parse_and_stop), \
                mock.patch.object(parser, "parse_known_args", parse_known_and_stop), \
                contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_module(module, run_name="__main__") if module else runpy.run_path(str(path), run_name="__main__")
    except Parsed:
        return
    except SystemExit as e:
        raise AssertionError(f"{path.relative_to(REPO)} {' '.join(args)}: its flags do not parse "
                             f"(exit {e.code}): {stderr.getvalue().strip()[-800:]}") from None
    finally:
        sys.argv, sys.path[:] = saved
    raise AssertionError(f"{path.relative_to(REPO)} ran to its end without parsing flags")


def is_script(argv: list[str]) -> bool:
    if argv[0] in PYTHONS:
        return len(argv) > 1
    return "/" in argv[0] and (REPO / argv[0]).exists() or argv[0].startswith(("bench/", "launch/"))


def check_block(block: Block) -> list:
    """The record check of a block; returns the configs its distrec commands compose."""
    configs, scripts, prepared = [], set(), set()
    for argv in expand(block.text):
        if argv[0] == "distrec":
            composed = check_stage(argv)
            for cfg in composed:  # a block that prepares data runs its later stages on it
                if argv[1] in ("prepare", "run"):  # `run` prepares its own data
                    prepared.add(cfg.paths.data)
                elif prepared and argv[1] != "sweep" and cfg.paths.data not in prepared:
                    raise AssertionError(f"`{' '.join(argv)}` reads {cfg.paths.data} (data={cfg.data.name}), which "
                                         f"no `distrec prepare` of this block wrote ({', '.join(sorted(prepared))})")
            configs += composed
        elif is_script(argv):
            scripts.add(tuple(argv))
    for argv in sorted(scripts):
        check_script(list(argv))
    return configs
