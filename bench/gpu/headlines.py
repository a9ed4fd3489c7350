"""The headline experiments on one GPU: what `bench/gpu/pack` assembles here and `bench/gpu/reproduce`
runs on the GPU machine (docs/gpu.md).

The GPU machine has torch but no Hydra, Ray, DeepSpeed or faiss, and no network. So everything that needs
them happens here, in `pack`: each experiment's config is composed with Hydra and saved resolved (plain
YAML, `engine=gpu`), its prepared data and SID table are built by the normal stages (cached under
`--runs`) and copied, and omegaconf (pure Python, the one library distrec's configs need that the
machine lacks) is copied beside them. `reproduce` then needs only torch, omegaconf and this repository:
it loads each YAML against the schema (`distrec.config.load_resolved`) and calls the same `train` and
`evaluate` stages the CLI runs.

Pack layout (`gpu_pack/`, git-ignored, carried to the machine):
    pack.json           the experiments in run order: time weights, published numbers, sizes
    configs/<key>.yaml  resolved configs; paths.data / paths.sids relative to the pack, the rest to the work dir
    data/<key>/         prepared data, one copy per distinct data config
    sids/<key>/         SID tables, one per distinct data + embed + tokenizer config
    site/               omegaconf and antlr4 (its parser), copied from this environment

Only the standard library is imported at the top: `reproduce` puts site/ on the path first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIMIT = 64 * 2 ** 20  # what may travel to the device machine: the working tree, carried paths included
SITE_PACKAGES = ("omegaconf", "antlr4")  # pure Python; the GPU machine has PyYAML, omegaconf's other need
# bf16 dense peak of the card (vendor spec), by a substring of torch's device name; first match wins
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989.4e12), ("H200", 989.4e12), ("A100", 312e12), ("L40S", 362e12))
# a dry run: every experiment end to end on a few samples (checks the pack and the code, not the numbers)
DRY_RUN = ["train.max_steps=2", "train.global_batch_size=16", "train.micro_batch_size=null",
           "train.warmup_steps=0", "train.eval_every=2", "train.log_every=1", "train.val_max_users=16",
           "eval.max_users=32", "eval.batch_size=16", "train.time_limit_s=null"]
MIN_CAP_S = 20  # an experiment given less than this is skipped, not started
# every experiment on the GPU: the fast path; beam search on whole evaluation batches (the CPU's
# eval.beam_rows bounds host memory; a GPU holds 1024 users x 20 beams of these models easily)
GPU = ["engine=gpu", "eval.beam_rows=null", "progress=false"]


@dataclass
class Headline:
    key: str  # its name in the pack and the results
    experiment: str  # configs/experiment/<experiment>.yaml
    weight: float  # its share of the time budget (relative)
    overrides: list[str] = field(default_factory=list)  # on top of the experiment and engine=gpu
    published: dict = field(default_factory=dict)  # test metric -> published value
    source: str = ""


# Cheapest proofs first. eval.batch_size: users per forward on the GPU (beam search: x 20 beams).
# micro_batch_size=null: one pass over the whole global batch where the CPU recipe cut it only for
# speed (RPG: a per-position loss, the same gradient; ACERec: its in-batch ISA negatives come from the
# whole 256-window batch, as one GPU pass in the paper). IntRR keeps its 52 x 16 accumulation (the
# released recipe's micro-batches).
HEADLINES = [
    Headline("hstu_ml1m", "hstu_ml1m", 1.0, ["eval.batch_size=1024"],
             {"recall@10": 0.3097, "ndcg@10": 0.1720}, "Meta generative-recommenders README (HR@10)"),
    Headline("sasrec_beauty", "sasrec_beauty", 0.8, ["eval.batch_size=1024"],
             {"recall@10": 0.0605, "ndcg@10": 0.0318}, "TIGER paper, full-ranking SASRec"),
    Headline("intrr_beauty", "intrr_beauty", 1.2, ["eval.batch_size=1024"],
             {"recall@10": 0.0640, "ndcg@10": 0.0384}, "released AMAP-ML/IntRR (docs/benchmarks.md)"),
    Headline("rpg_beauty", "rpg_beauty", 1.2, ["eval.batch_size=512", "train.micro_batch_size=null"],
             {"ndcg@10": 0.0436}, "RPG re-run (docs/benchmarks.md)"),
    Headline("acerec_beauty", "acerec_beauty", 1.2, ["eval.batch_size=512", "train.micro_batch_size=null"],
             {"recall@10": 0.0856, "ndcg@10": 0.0513}, "ACERec v2 paper (arXiv 2602.13573), as summarised"),
    Headline("tiger_beauty", "tiger_beauty", 1.6, ["eval.batch_size=1024"],
             {"recall@10": 0.0648, "ndcg@10": 0.0384}, "TIGER paper"),
]


def _key(prefix: str, *sections) -> str:
    text = json.dumps(sections, sort_keys=True, default=str)
    return f"{prefix}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def travelling_bytes(pack_dir: Path) -> dict:
    """Bytes that travel with a device call: the tracked and untracked-not-ignored files of the
    checkout, plus the carried pack."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "-co", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    tree = sum((REPO / f).stat().st_size for f in listed if f and (REPO / f).is_file())
    pack = _dir_bytes(pack_dir)
    return {"tree_bytes": tree, "pack_bytes": pack, "total_bytes": tree + pack, "limit_bytes": LIMIT}


# ---------------------------------------------------------------- pack (here: Hydra, faiss)

def build_inputs(cfg, runs: Path) -> dict:
    """Point `cfg.paths` data/embeddings/sids at `runs`/<name>-<hash of the configs that made them> and
    build whatever is missing there with the normal stages (prepare [-> embed -> tokenize]); artifacts
    of equal configs are shared. Returns {"data": key, "sids": key or None}."""
    import importlib

    from omegaconf import OmegaConf, open_dict

    from distrec.stages.run import pipeline

    section = lambda name: OmegaConf.to_container(cfg[name], resolve=True)  # noqa: E731
    with open_dict(cfg):  # paths inside the sections (famae.train_dir) follow paths.root: one for all
        cfg.paths.root = str(runs)
    keys = {"data": _key(cfg.data.name, section("data")), "sids": None}
    with open_dict(cfg):
        cfg.paths.data = str(runs / keys["data"])
        embedded = (section("data"), section("embed")) + ((section("famae"),) if cfg.embed.method == "famae" else ())
        cfg.paths.embeddings = str(runs / _key("embed", *embedded))
        cfg.paths.sids = str(runs / _key(cfg.tokenizer.method, *embedded, section("tokenizer")))
    stage = cfg.stage
    for step in pipeline(cfg):
        if not step.shared:  # train and evaluate: the reproduction's own
            continue
        if step.name == "tokenize":
            keys["sids"] = Path(cfg.paths.sids).name
        if not (Path(cfg.paths[step.writes]) / "manifest.json").exists():
            with open_dict(cfg):
                cfg.stage = step.name
            importlib.import_module(f"distrec.stages.{step.name}").run(cfg)
    with open_dict(cfg):
        cfg.stage = stage
    return keys


def pack(out: Path, runs: Path, headlines=HEADLINES, extra: list[str] = ()) -> dict:
    """Build (or reuse, from `runs`) every experiment's data and SID table, write the pack to `out`."""
    import importlib

    from omegaconf import OmegaConf, open_dict

    from distrec.config import compose

    out, runs = Path(out).resolve(), Path(runs).resolve()
    if out.exists():
        shutil.rmtree(out)
    (out / "configs").mkdir(parents=True)
    entries = []
    for h in headlines:
        cfg = compose(["stage=train", f"experiment={h.experiment}", *GPU, *h.overrides, *extra])
        keys = build_inputs(cfg, runs)
        data_key, sids_key, needs_sids = keys["data"], keys["sids"], keys["sids"] is not None
        if not (out / "data" / data_key).exists():
            shutil.copytree(cfg.paths.data, out / "data" / data_key)
        if needs_sids and not (out / "sids" / sids_key).exists():
            shutil.copytree(cfg.paths.sids, out / "sids" / sids_key)
        with open_dict(cfg):
            cfg.stage = "train"
            cfg.paths.root = f"runs/{h.key}"  # reproduce: relative to its work dir
            cfg.paths.train, cfg.paths.eval = f"runs/{h.key}/train", f"runs/{h.key}/eval"
            cfg.paths.embeddings = f"runs/{h.key}/embed"  # not carried: nothing reads it there
            cfg.paths.data = f"data/{data_key}"  # relative to the pack
            cfg.paths.sids = f"sids/{sids_key}" if needs_sids else f"runs/{h.key}/sids"
        (out / "configs" / f"{h.key}.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        entries.append({**asdict(h), "method": cfg.method.name, "dataset": cfg.data.name,
                        "carried": ["paths.data"] + (["paths.sids"] if needs_sids else [])})
    site = out / "site"
    for name in SITE_PACKAGES:
        module = importlib.import_module(name)
        shutil.copytree(Path(module.__file__).parent, site / name, ignore=shutil.ignore_patterns("__pycache__"))
    size = travelling_bytes(out)
    info = {"headlines": entries, "extra_overrides": list(extra), "size": size, "created": time.strftime("%F %T"),
            "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                     text=True).stdout.strip()}
    (out / "pack.json").write_text(json.dumps(info, indent=2))
    return info


def main_pack(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="bench/gpu/pack", description="Assemble what bench/gpu/reproduce needs "
                                     "on a GPU machine into one git-ignored folder (docs/gpu.md).")
    parser.add_argument("--out", default=str(REPO / "gpu_pack"), help="the pack folder (default: gpu_pack/)")
    parser.add_argument("--runs", default=str(REPO / "runs" / "inputs"),
                        help="where prepared data, embeddings and SID tables are built and kept between packs")
    parser.add_argument("--only", help="comma-separated keys of HEADLINES (default: all)")
    args = parser.parse_args(argv)
    chosen = [h for h in HEADLINES if not args.only or h.key in args.only.split(",")]
    info = pack(Path(args.out), Path(args.runs), chosen)
    s = info["size"]
    mib = lambda b: f"{b / 2 ** 20:.1f} MiB"  # noqa: E731
    print(f"pack: {len(chosen)} experiments -> {args.out}: pack {mib(s['pack_bytes'])} + working tree "
          f"{mib(s['tree_bytes'])} = {mib(s['total_bytes'])} of the {mib(LIMIT)} that may travel")
    if s["total_bytes"] > LIMIT:
        sys.exit("pack: too large to travel; drop experiments (--only) or files from the working tree")


# ---------------------------------------------------------------- reproduce (GPU machine: no Hydra)

def apply_overrides(cfg, overrides) -> None:
    """`key=value` overrides without Hydra; values are YAML (null, numbers, lists)."""
    import yaml
    from omegaconf import OmegaConf

    from distrec.errors import ConfigError

    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override '{item}' is not key=value")
        if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
            raise ConfigError(f"override '{item}': no config key '{key}'")
        OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)


def load_config(pack_dir: Path, key: str, work: Path, overrides=()):
    from omegaconf import open_dict

    from distrec.config import load_resolved

    cfg = load_resolved(pack_dir / "configs" / f"{key}.yaml")
    with open_dict(cfg):
        for name in cfg.paths:
            base = pack_dir if name in ("data", "sids") and (pack_dir / cfg.paths[name]).exists() else work
            cfg.paths[name] = str((base / cfg.paths[name]).resolve())
    apply_overrides(cfg, overrides)
    return cfg


def card() -> dict:
    """The device, its bf16 peak (vendor spec where known) and a measured bf16 matmul rate."""
    import torch

    if not torch.cuda.is_available():
        n, reps, device = 512, 5, torch.device("cpu")
        name = "CPU"
    else:
        n, reps, device = 8192, 10, torch.device("cuda")
        name = torch.cuda.get_device_name(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    measured = 2 * n ** 3 * reps / (time.perf_counter() - start)
    spec = next((peak for sub, peak in PEAK_BF16 if sub in name), None)
    return {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
            "matmul_bf16_flops": measured, "peak_bf16_flops": spec or measured,
            "peak_source": "vendor spec, dense bf16" if spec else f"measured {n}^3 bf16 matmul"}


def flops_per_sample(cfg, train_dir: Path, device, steps: int = 3) -> float:
    """Matmul FLOPs of one training step (forward + backward) per sample, as torch's FlopCounterMode
    counts them (distrec.scaling.counters.measured_flops), averaged over the first `steps` global batches."""
    import torch

    from distrec.data.batches import TrainSampler, build_train_index, collate_train
    from distrec.data.dataset import load_prepared
    from distrec.scaling.counters import measured_flops
    from distrec.train.engine import plan_batches
    from distrec.train.export import TrainedModel

    t = cfg.train
    trained = TrainedModel(train_dir)
    model = trained.load("last", cfg.paths.sids, device)
    data = load_prepared(cfg.paths.data).sequence_data()
    index = build_train_index(data, cfg.model.max_history, t.include_valid)
    plan = plan_batches(t.global_batch_size, 1, t.micro_batch_size)
    sampler = TrainSampler(index, plan.global_batch, plan.micro_batch, 1, 0, cfg.seed, t.loss_weighting,
                           t.group_by_length)
    model.train()
    total = 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.engine.precision == "bf16")
    for step in range(min(steps, sampler.steps_per_epoch)):
        for ids, _ in sampler.device_micro_batches(step, device):
            with autocast:
                total += measured_flops(model, collate_train(data, index, ids, cfg.model.max_history))
    return total / (min(steps, sampler.steps_per_epoch) * plan.global_batch)


def run_one(pack_dir: Path, key: str, work: Path, cap_s: float, overrides=()) -> dict:
    """One experiment (in its own process): train within `cap_s` (a quarter is kept for the test
    evaluation), evaluate, measure FLOPs per sample; returns the result row."""
    import torch

    from omegaconf import open_dict

    from distrec.artifacts import read_json
    from distrec.stages import evaluate, train

    start = time.perf_counter()
    use_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if use_gpu else "cpu")
    cfg = load_config(pack_dir, key, work, [f"engine.use_gpu={str(use_gpu).lower()}",
                                            f"train.time_limit_s={max(0.75 * cap_s - 10, 5):.0f}", *overrides])
    if Path(cfg.paths.root).exists():
        shutil.rmtree(cfg.paths.root)  # a fresh run: the cap is for this attempt
    summary = train.run(cfg)
    with open_dict(cfg):
        cfg.stage = "evaluate"
        cfg.eval.split = "test"
    report = evaluate.run(cfg)
    wall = time.perf_counter() - start
    model = read_json(Path(cfg.paths.train) / "model.json")
    per_sample = flops_per_sample(cfg, Path(cfg.paths.train), device)
    tokens_per_s = summary.get("tokens_per_s") or 0.0
    return {
        "key": key, "status": "ok", "method": cfg.method.name, "dataset": cfg.data.name,
        "precision": cfg.engine.precision, "params": model.get("params"),
        "steps": summary["steps"], "total_steps": summary["total_steps"],
        "epochs_done": summary["steps"] / summary["steps_per_epoch"],
        "epochs_planned": summary["total_steps"] / summary["steps_per_epoch"],
        "stopped_by": summary.get("stopped_by"), "train_seconds": summary["train_seconds"], "wall_seconds": wall,
        "samples_per_s": summary.get("samples_per_s"), "tokens_per_s": tokens_per_s,
        "global_batch": summary["global_batch"], "micro_batch": summary["micro_batch"],
        "best_step": summary.get("best_step"), "select_metric": summary.get("select_metric"),
        "best_valid": summary.get(f"best_val_{summary.get('select_metric')}"),
        "test": {k: v for k, v in report["metrics"].items() if k.startswith(("recall@", "ndcg@", "mrr@"))},
        "test_users": report["metrics"]["users"], "test_filter_history": bool(cfg.eval.filter_history),
        "popularity_test": report.get("baselines", {}).get("popularity"),
        "flops_per_sample": per_sample,
        "analytic_flops_per_token": model.get("train_flops_per_token"),
        "gpu_peak_memory_bytes": torch.cuda.max_memory_allocated() if use_gpu else None,
        "timings_s": {"train": summary["train_seconds"], "evaluate": report.get("timings_s", {})},
    }


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(results: dict) -> str:
    c = results["card"]
    peak = c["peak_bf16_flops"]
    lines = [f"Device: {c['device']} (torch {c['torch']}, CUDA {c['cuda']}); bf16 matmul measured "
             f"{c['matmul_bf16_flops'] / 1e12:.3g} TFLOP/s; MFU against {peak / 1e12:.3g} TFLOP/s "
             f"({c['peak_source']}). Budget {results['budget_s']:.0f} s, used {results['wall_s']:.0f} s"
             + (" (dry run)" if results["dry_run"] else "") + ".", "",
             "| experiment | status | epochs done / planned | stopped by | train s | wall s | samples/s | MFU "
             "| MFU (analytic) | test Recall@10 | test NDCG@10 | published R@10 / N@10 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["experiments"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['key']} | {r.get('status')}: {r.get('error', '')[:80]} | | | | "
                         f"{_fmt(r.get('wall_seconds'), '.0f')} | | | | | | |")
            continue
        mfu = r["samples_per_s"] * r["flops_per_sample"] / peak if r.get("samples_per_s") else None
        analytic = (r["tokens_per_s"] * r["analytic_flops_per_token"] / peak
                    if r.get("analytic_flops_per_token") and r.get("tokens_per_s") else None)
        pub = r.get("published") or {}
        lines.append(
            f"| {r['key']} | ok | {r['epochs_done']:.3g} / {r['epochs_planned']:.3g} "
            f"| {r['stopped_by'] or 'all steps'} "
            f"| {r['train_seconds']:.0f} | {r['wall_seconds']:.0f} | {_fmt(r['samples_per_s'], '.0f')} "
            f"| {_fmt(mfu, '.2%')} | {_fmt(analytic, '.2%')} | {_fmt(r['test'].get('recall@10'))} "
            f"| {_fmt(r['test'].get('ndcg@10'))} | {_fmt(pub.get('recall@10'))} / {_fmt(pub.get('ndcg@10'))} |")
    lines += ["", "MFU: samples/s x matmul FLOPs per training sample (FlopCounterMode, forward + backward) / peak. "
              "Analytic: tokens/s x the backbone's 6N-style FLOPs per token (distrec.scaling.counters). "
              "Test metrics: full-catalog leave-one-out ranking of every test user, as `distrec evaluate`."]
    return "\n".join(lines) + "\n"


def _write(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))


def _archive(out: Path, work: Path, keys) -> None:
    """The runs' small files (logs, curves, model.json, eval metrics) as one file: $OUT holds 8 at most."""
    names = ("train/metrics.jsonl", "train/model.json", "train/curve.png", "eval/metrics.json")
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for key in keys:
            for name in names:
                path = work / "runs" / key / name
                if path.exists():
                    tar.add(path, arcname=f"{key}/{name}")


def reproduce(pack_dir: Path, out: Path, work: Path, budget_s: float, dry_run: bool = False, only=None,
              overrides=()) -> dict:
    """Every experiment of the pack in order, each in its own process with its share of what is left
    of the budget; results.json and results.md are rewritten after each one."""
    start = time.perf_counter()
    pack_dir, out, work = Path(pack_dir).resolve(), Path(out).resolve(), Path(work).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    info = json.loads((pack_dir / "pack.json").read_text())
    chosen = [h for h in info["headlines"] if not only or h["key"] in only]
    results = {"card": card(), "budget_s": budget_s, "dry_run": dry_run, "pack_commit": info.get("commit"),
               "experiments": [], "wall_s": 0.0}
    overrides = [*(DRY_RUN if dry_run else []), *overrides]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pack_dir / "site"), str(REPO),
                                                        os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    for i, h in enumerate(chosen):
        left = budget_s - (time.perf_counter() - start)
        cap = left * h["weight"] / sum(g["weight"] for g in chosen[i:])
        row = {"key": h["key"], "cap_s": cap, "published": h["published"], "published_source": h["source"]}
        if cap < MIN_CAP_S and not dry_run:
            results["experiments"].append({**row, "status": "skipped", "error": f"{left:.0f} s of the budget left"})
            continue
        print(f"reproduce: {h['key']} ({h['experiment']}), cap {cap:.0f} s", flush=True)
        result_file = work / f"{h['key']}.result.json"
        result_file.unlink(missing_ok=True)
        began = time.perf_counter()
        command = [sys.executable, str(Path(__file__).with_name("reproduce")), "--one", h["key"], "--pack",
                   str(pack_dir), "--work", str(work), "--cap", str(cap), "--result", str(result_file)]
        for item in overrides:
            command += ["--set", item]
        try:
            # a hung experiment is killed, not waited for: at twice its cap, or the end of the budget
            subprocess.run(command, env=env, timeout=max(min(2 * cap, left), 60 if dry_run else 1), check=False)
        except subprocess.TimeoutExpired:
            pass
        if result_file.exists():
            row.update(json.loads(result_file.read_text()))
        else:
            row.update(status="timeout" if time.perf_counter() - began >= min(2 * cap, left) else "error",
                       error="no result written (see reproduce.log)")
        row.setdefault("wall_seconds", time.perf_counter() - began)
        results["experiments"].append(row)
        results["wall_s"] = time.perf_counter() - start
        _write(out, results)
    results["wall_s"] = time.perf_counter() - start
    _write(out, results)
    _archive(out, work, [h["key"] for h in chosen])
    return results


def main_reproduce(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="bench/gpu/reproduce", description="Run the packed headline "
                                     "experiments within a wall-clock budget; results.json + results.md to --out.")
    parser.add_argument("--pack", default=str(REPO / "gpu_pack"))
    parser.add_argument("--out", default=os.environ.get("OUT", str(REPO / "runs" / "gpu_out")),
                        help="results (default: $OUT)")
    parser.add_argument("--work", default="/tmp/distrec-gpu", help="where the runs are written")
    parser.add_argument("--budget", type=float, default=540.0, help="total wall-clock seconds (default 9 minutes)")
    parser.add_argument("--only", help="comma-separated experiment keys (default: all in the pack)")
    parser.add_argument("--dry-run", action="store_true", help="2 steps of each on a few samples: checks the "
                        "pack and the code end to end (CPU or GPU)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every experiment (e.g. engine.compile=true)")
    # one experiment, in a child process
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--cap", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pack_dir = Path(args.pack)
    if not (pack_dir / "pack.json").exists():
        sys.exit(f"reproduce: {pack_dir}/pack.json not found: run bench/gpu/pack on the CPU machine first and "
                 "carry the folder (docs/gpu.md)")
    sys.path[:0] = [str(pack_dir.resolve() / "site"), str(REPO)]
    if args.one:
        try:
            row = run_one(pack_dir.resolve(), args.one, Path(args.work), args.cap, args.set)
        except Exception as e:  # the parent records it and goes on with the next experiment
            traceback.print_exc()
            row = {"key": args.one, "status": "error", "error": f"{type(e).__name__}: {e}"}
        Path(args.result).write_text(json.dumps(row, indent=2))
        return
    results = reproduce(pack_dir, Path(args.out), Path(args.work), args.budget, args.dry_run,
                        args.only.split(",") if args.only else None, args.set)
    print(markdown(results))
