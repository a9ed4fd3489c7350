#!/usr/bin/env python
"""Submit a distrec command to a Ray cluster with `ray job submit`.

    python launch/submit.py [--address http://HEAD:8265] [--pip] [--no-wait] [--include PATH] -- distrec train ...

The runtime env ships the git-tracked files of this checkout (as they are on disk) plus the paths
named with `--include`, copied to a temporary package directory: nothing else (an untracked `.env`
or key file) leaves the machine, and the untracked files left out are listed. The package is the
job's `working_dir` (the job runs in a copy of it) and its `distrec` package is in `py_modules` (on
every worker's path, whatever its directory), so Ray Train workers import the same code as the
driver. `--pip` also installs the project's dependencies from pyproject.toml into the job's
environment, for clusters whose image lacks them (a cluster from cluster.yaml already has them).

A `distrec ...` entrypoint runs as `python -m distrec ...` and joins the job's cluster
(`cluster=job`, i.e. cluster.address=auto) unless the command sets `cluster` itself.
Ray 2.60 needs token auth for the CLI: RAY_AUTH_MODE=token is set here; the token comes from
~/.ray/auth_token (or RAY_AUTH_TOKEN). See docs/launch.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Forwarded to the job when set here.
PASS_ENV = ["DISTREC_DATA", "DS_ACCELERATOR", "HF_HOME", "TORCH_EXTENSIONS_DIR"]


def project_dependencies() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def git_files(repo: Path, *options: str) -> list[str]:
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", *options], capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit("submit.py: git is not installed; it ships the git-tracked files of the checkout") from None
    if out.returncode:
        raise SystemExit(f"submit.py: {repo} is not a git checkout ({out.stderr.strip()}); "
                         "submit from a clone of the repository")
    return [f for f in out.stdout.split("\0") if f]


def package(repo: Path, dest: Path, include: list[str] = ()) -> list[str]:
    """Copy the git-tracked files of `repo` and the `include`d paths (relative to `repo`) into `dest`;
    return the untracked, non-ignored paths left out (an untracked directory as `dir/`)."""
    for name in [*git_files(repo, "--cached", "--recurse-submodules"), *include]:
        src, dst = repo / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
        elif os.path.lexists(src):  # a tracked file deleted on disk is not shipped
            shutil.copy2(src, dst, follow_symlinks=False)
    named = [Path(p) for p in include]
    return [f for f in git_files(repo, "--others", "--exclude-standard", "--directory")
            if not any(p == Path(f) or p in Path(f).parents for p in named)]


def runtime_env(working_dir: Path, pip: bool = False, env_vars: dict[str, str] | None = None) -> dict:
    env = {
        "working_dir": str(working_dir),
        "py_modules": [str(working_dir / "distrec")],
        "env_vars": {"RAY_USAGE_STATS_ENABLED": "0",
                     **{k: os.environ[k] for k in PASS_ENV if k in os.environ},
                     **(env_vars or {})},
    }
    if pip:
        env["pip"] = project_dependencies()
    return env


def entrypoint(command: list[str]) -> list[str]:
    """`distrec <stage> ...` -> `python -m distrec <stage> ... cluster=job`; anything else as is.
    Kept as separate words: `ray job submit` quotes each one for the job's shell."""
    if not command:
        raise SystemExit("submit.py: no entrypoint given; put the command after `--`")
    if command[0] == "distrec":
        command = ["python", "-m", "distrec", *command[1:]]
        if not any(arg.startswith(("cluster=", "cluster.address=")) for arg in command):
            command.append("cluster=job")
    return command


def relative_paths(command: list[str]) -> list[str]:
    """The artifact paths (`paths.*`, `sweep.out_dir`) of a `distrec <stage> ...` command that are relative.
    The job runs in the uploaded copy of the checkout, which Ray deletes when the job ends: a relative
    path writes there (lost with it) and reads artifacts there (never present)."""
    if len(command) < 2 or command[0] != "distrec":
        return []
    try:
        from distrec.cli import hydra_argv
        from distrec.config import compose
    except ImportError as e:
        raise SystemExit(f"submit.py: cannot import distrec ({e}) to check the command's paths; "
                         "install this checkout (pip install -e .)") from None
    argv = hydra_argv(command[1], command[2:])  # Hydra's flags first, then stage=... and the overrides
    try:
        cfg = compose(argv[argv.index(f"stage={command[1]}"):])
    except Exception as e:  # a multirun sweep (a=1,2) does not compose as one config
        if "--multirun" in command or "-m" in command:
            print(f"submit.py: artifact paths not checked ({type(e).__name__}: {e})", file=sys.stderr)
            return []
        raise SystemExit(f"submit.py: the command's config does not compose: {e}") from None
    found = {f"paths.{key}": value for key, value in cfg.paths.items()}
    found["sweep.out_dir"] = cfg.sweep.out_dir
    return [f"{key}={value}" for key, value in found.items() if not Path(value).is_absolute()]


def env_pair(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not (key and sep):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
    return key, value


def checkout_path(path: str) -> str:
    """An existing path inside this checkout, relative to it."""
    full = Path(path).resolve()
    if not full.exists():
        raise argparse.ArgumentTypeError(f"{path} does not exist")
    if REPO not in full.parents:
        raise argparse.ArgumentTypeError(f"{path} is not inside the checkout {REPO}")
    return str(full.relative_to(REPO))


def ray_cli() -> str:
    return shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1:]
    else:
        command = []
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="submit.py [options] -- distrec <stage> [overrides]")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"),
                        help="job server of the head node (default $RAY_ADDRESS or http://127.0.0.1:8265)")
    parser.add_argument("--pip", action="store_true", help="install pyproject dependencies in the job env")
    parser.add_argument("--no-wait", action="store_true", help="return after submitting (do not stream logs)")
    parser.add_argument("--submission-id", help="job id (default: generated by Ray)")
    parser.add_argument("--entrypoint-num-cpus", type=float, default=None,
                        help="CPUs reserved for the driver (default 0: the driver only coordinates)")
    parser.add_argument("--env", action="append", default=[], type=env_pair, metavar="KEY=VALUE",
                        help="extra job env var")
    parser.add_argument("--include", action="append", default=[], type=checkout_path, metavar="PATH",
                        help="also ship this untracked (or ignored) file or directory of the checkout")
    parser.add_argument("--dry-run", action="store_true", help="print the ray job submit command and exit")
    args = parser.parse_args(argv)
    relative = relative_paths(command)
    if relative:
        parser.exit(2, f"submit.py: {', '.join(relative)}: relative, so the job would write its artifacts into its "
                       "uploaded copy of the checkout, which is deleted when the job ends (and find no artifact "
                       "of an earlier stage there); set paths.root to an absolute directory that the cluster's "
                       "nodes share, e.g. paths.root=/shared/runs/<name>\n")

    with tempfile.TemporaryDirectory(prefix="distrec-submit-") as tmp:
        left_out = package(REPO, Path(tmp), args.include)
        if left_out:
            print(f"submit.py: not shipped, as git does not track them (`git add` them or name them with "
                  f"--include): {', '.join(left_out)}", file=sys.stderr)
        cmd = [ray_cli(), "job", "submit", "--address", args.address,
               "--runtime-env-json", json.dumps(runtime_env(Path(tmp), args.pip, dict(args.env)))]
        if args.submission_id:
            cmd += ["--submission-id", args.submission_id]
        if args.entrypoint_num_cpus is not None:
            cmd += ["--entrypoint-num-cpus", str(args.entrypoint_num_cpus)]
        if args.no_wait:
            cmd.append("--no-wait")
        cmd += ["--", *entrypoint(command)]
        if args.dry_run:
            print(shlex.join(cmd))
            return 0
        # The package is exactly what ships: Ray must not drop an --include'd file that .gitignore names.
        env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"), "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_RUNTIME_ENV_IGNORE_GITIGNORE": "1"}
        return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
