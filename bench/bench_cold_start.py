"""Cold start on Amazon Beauty: items added after training, with `distrec tokenize --extend` against a
tokenizer refitted on the grown catalog and against popularity (issue 18).

The newest `--fraction` of the items are held out of tokenizer and generator training, then added:

    split    the prepared data becomes grown/ (the whole catalog, the held-out items numbered last) and
             before/ (the catalog without them: the held-out items removed from every sequence, the
             leave-one-out split recomputed). Embeddings (one TF-IDF fit over every item's text, as a
             pretrained text encoder would have read it; no interaction of a held-out item) are renumbered.
    extend   tokenize before/ -> train on before/ -> `tokenize --extend` with grown/'s embeddings -> evaluate on grown/
    refit    tokenize grown/ (codes of every item refitted) -> train on before/ with the first N_old rows of that
             table -> evaluate on grown/ with the whole table
    table    the cold-start users (test target = a held-out item): Recall/NDCG@K of both and of popularity

Beauty's public sequences carry no timestamps, so "newest" is measured in the sequences: an item is as
new as its earliest interaction is close to the end of that user's sequence (an item bought only as
users' last purchases is the newest). Every stage is the `distrec` command a user would type.

    python bench/bench_cold_start.py split --data runs/rpg_beauty/data --embeddings runs/rpg_beauty/embed
    python bench/bench_cold_start.py extend -- model.d_model=128 train.epochs=8
    python bench/bench_cold_start.py refit -- model.d_model=128 train.epochs=8
    python bench/bench_cold_start.py table --out bench/results/cold_start_beauty.json
    # the same models, a tenth of each list kept for the new items (eval.new_item_share)
    python bench/bench_cold_start.py extend --eval eval.new_item_share=0.1 --eval-name eval_share10
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from distrec.artifacts import read_json, read_table, write_json, write_table
from distrec.data.dataset import load_prepared
from distrec.data.splits import leave_one_out
from distrec.tokenize.sid_table import SIDTable

RECIPE = ["experiment=rpg_beauty", "progress=false"]


def newest_items(data, fraction: float) -> np.ndarray:
    """The `fraction` of items whose earliest interaction sits closest to the end of its user's sequence."""
    lengths = np.diff(data.offsets)
    from_end = np.repeat(data.offsets[1:], lengths) - 1 - np.arange(len(data.flat_items))  # 0 = a user's last item
    earliest = np.zeros(data.num_items + 1, np.int64)
    np.maximum.at(earliest, data.flat_items, from_end)
    order = np.lexsort((-np.arange(data.num_items + 1), earliest))  # closest to the end first; ties: larger id
    order = order[order > 0]
    return np.sort(order[:int(round(fraction * data.num_items))])


def split(args) -> None:
    data = load_prepared(args.data)
    new = newest_items(data, args.fraction)
    is_new = np.zeros(data.num_items + 1, bool)
    is_new[new] = True
    old = np.flatnonzero(~is_new)[1:]
    n_old = len(old)
    renumber = np.zeros(data.num_items + 1, np.int64)  # old id -> id in the grown catalog (held-out items last)
    renumber[old], renumber[new] = np.arange(1, n_old + 1), np.arange(n_old + 1, data.num_items + 1)
    order = np.argsort(renumber[1:], kind="stable")  # rows of the items table in new-id order
    root = Path(args.root)
    info = {"fraction": args.fraction, "items": data.num_items, "held_out": len(new), "trained_items": n_old,
            "newness": "earliest interaction's distance from the end of its user's sequence (no timestamps)",
            "source": str(Path(args.data).resolve())}

    if data.stats.get("has_timestamps"):
        sys.exit(f"{args.data} has timestamps: hold out by first interaction time instead (not written yet)")
    items = _with_ids(data.items.take(pa.array(order)), np.arange(1, data.num_items + 1))
    flat = renumber[data.flat_items]
    grown_seq = _with_items(data.sequences, data.offsets, flat, data.sequences.column("valid_pos").to_numpy(),
                            data.sequences.column("test_pos").to_numpy())
    _write_data(data, root / "grown" / "data", items, grown_seq, data.stats, data.split, renumber, info)

    keep = flat <= n_old
    lengths = np.add.reduceat(keep.astype(np.int64), data.offsets[:-1]) if len(flat) else np.zeros(0, np.int64)
    users = lengths > 0  # a user whose every item was held out has no history before the catalog grew
    offsets = np.concatenate([[0], np.cumsum(lengths[users])])
    rows = np.flatnonzero(users)
    user_of_item = np.repeat(np.arange(len(lengths)), np.diff(data.offsets))
    flat_before = flat[keep & users[user_of_item]]
    valid, test = leave_one_out(lengths[users])
    before_seq = _with_items(data.sequences.take(pa.array(rows)), offsets, flat_before, valid, test)
    stats = {**data.stats, "users": int(users.sum()), "items": n_old, "interactions": int(len(flat_before))}
    split_info = {**data.split, "counts": {"users": int(users.sum()), "valid_users": int((valid >= 0).sum()),
                                           "test_users": int((test >= 0).sum())}}
    info_before = {**info, "users_without_history": int((~users).sum())}
    _write_data(data, root / "before" / "data", items.slice(0, n_old), before_seq, stats, split_info, renumber,
                info_before)

    vectors = read_table(Path(args.embeddings) / "item_embeddings")
    ids = renumber[vectors.column("item_id").to_numpy()]
    vectors = _with_ids(vectors, ids).take(pa.array(np.argsort(ids)))
    for part, table in (("grown", vectors), ("before", vectors.slice(0, n_old))):
        out = root / part / "embed"
        shutil.rmtree(out, ignore_errors=True)
        write_table(table, out / "item_embeddings", 2)
        manifest = read_json(Path(args.embeddings) / "manifest.json")
        write_json(out / "manifest.json", {**manifest, "cold_start": info})
    write_json(root / "split.json", info_before)
    print(f"split: {len(new):,} of {data.num_items:,} items held out (ids {n_old + 1}..{data.num_items} in grown/); "
          f"{int((~users).sum())} users have no history before -> {root}")


def _with_ids(table: pa.Table, ids) -> pa.Table:
    return table.set_column(table.column_names.index("item_id"), "item_id", pa.array(np.asarray(ids, np.int64)))


def _with_items(sequences: pa.Table, offsets, flat, valid, test) -> pa.Table:
    items = pa.ListArray.from_arrays(pa.array(np.asarray(offsets, np.int32)), pa.array(flat, pa.int64()))
    t = sequences.set_column(sequences.column_names.index("items"), "items", items)
    t = t.set_column(t.column_names.index("valid_pos"), "valid_pos", pa.array(np.asarray(valid, np.int32)))
    return t.set_column(t.column_names.index("test_pos"), "test_pos", pa.array(np.asarray(test, np.int32)))


def _write_data(data, out: Path, items, sequences, stats, split_info, renumber, info) -> None:
    shutil.rmtree(out, ignore_errors=True)
    write_table(items, out / "items", 2)
    write_table(sequences, out / "sequences", 2)
    for name in ("users", "attributes"):
        if (data.directory / "maps" / name).exists():
            shutil.copytree(data.directory / "maps" / name, out / "maps" / name)
    item_map = read_table(data.directory / "maps" / "items")
    ids = renumber[item_map.column("item_id").to_numpy()]
    item_map = _with_ids(item_map, ids).take(pa.array(np.argsort(ids)))
    write_table(item_map.slice(0, items.num_rows), out / "maps" / "items")
    write_json(out / "stats.json", stats)
    write_json(out / "splits.json", split_info)
    write_json(out / "manifest.json", {**data.manifest, "cold_start": info})  # last: the artifact is complete


def distrec(*args: str) -> None:
    command = [sys.executable, "-m", "distrec", *args]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def done(directory: Path) -> bool:
    return (directory / "manifest.json").exists()


def variant(args, name: str) -> None:
    root = Path(args.root).resolve()
    grown, before, out = root / "grown", root / "before", root / name
    trained_items = read_json(root / "split.json")["trained_items"]
    train_sids = out / "sids_trained"  # the table the generator trains with: items 1..trained_items
    if name == "extend":
        if not done(train_sids):
            distrec("tokenize", *RECIPE, f"paths.data={before / 'data'}", f"paths.embeddings={before / 'embed'}",
                    f"paths.sids={train_sids}")
    elif not done(out / "sids"):  # refit: tokenize the grown catalog; train on its first rows
        distrec("tokenize", *RECIPE, f"paths.data={grown / 'data'}", f"paths.embeddings={grown / 'embed'}",
                f"paths.sids={out / 'sids'}")
        shutil.rmtree(train_sids, ignore_errors=True)
        SIDTable.load(out / "sids").prefix(trained_items).save(train_sids)
        shutil.copy(out / "sids" / "manifest.json", train_sids / "manifest.json")
    train = [f"paths.data={before / 'data'}", f"paths.sids={train_sids}", f"paths.train={out / 'train'}",
             *args.overrides]
    if not (out / "train" / "model.json").exists():
        distrec("train", *RECIPE, *train)
    if name == "extend" and not done(out / "sids"):
        distrec("tokenize", *RECIPE, f"tokenizer.extend={train_sids}", f"paths.embeddings={grown / 'embed'}",
                f"paths.sids={out / 'sids'}")
    distrec("evaluate", *RECIPE, f"paths.data={grown / 'data'}", f"paths.sids={out / 'sids'}",
            f"paths.train={out / 'train'}", f"paths.eval={out / args.eval_name}", *args.eval_overrides)


def table(args) -> None:
    root = Path(args.root)
    info = read_json(root / "split.json")
    rows, result = [], {"split": info, "variants": {}}
    for name, label in (("extend", "`tokenize --extend` (frozen codebooks)"),
                        ("refit", "tokenizer refitted on the grown catalog")):
        path = root / name / args.eval_name / "metrics.json"
        if not path.exists():
            continue
        report = json.loads(path.read_text())
        cold = report["cold_start"]
        result["variants"][name] = {"cold_start": cold, "all_users": report["metrics"],
                                    "popularity_all_users": report["baselines"]["popularity"],
                                    "best_step": report["model"]["best_step"], "protocol": report["protocol"]}
        rows.append((label, cold["metrics"], report["metrics"]))
        popularity = (cold["popularity"], report["baselines"]["popularity"])
    if not rows:
        sys.exit(f"no evaluation under {root}/{{extend,refit}}/{args.eval_name} yet")
    rows.append(("popularity (training interactions of the grown catalog)", *popularity))
    ks = (10, 20)
    head = "| | " + " | ".join(f"cold R@{k} | cold N@{k}" for k in ks) + " | all R@10 | all N@10 |"
    lines = [head, "|---" * (2 * len(ks) + 3) + "|"]
    for label, cold, everyone in rows:
        lines.append(f"| {label} | " + " | ".join(f"{cold[f'recall@{k}']:.4f} | {cold[f'ndcg@{k}']:.4f}" for k in ks)
                     + f" | {everyone['recall@10']:.4f} | {everyone['ndcg@10']:.4f} |")
    users = next(iter(result["variants"].values()))["cold_start"]["users"]
    print(f"{users:,} cold-start test users (target among the {info['held_out']:,} held-out items)")
    print("\n".join(lines))
    if args.out:
        write_json(Path(args.out), result)
        print(f"wrote {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["split", "extend", "refit", "table"])
    p.add_argument("--root", default="runs/cold_start")
    p.add_argument("--data", default="runs/rpg_beauty/data", help="prepared Beauty (distrec prepare experiment=rpg_beauty)")
    p.add_argument("--embeddings", default="runs/rpg_beauty/embed", help="its embeddings (distrec embed experiment=rpg_beauty)")
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--eval", dest="eval_overrides", action="append", default=[], help="an override for evaluate")
    p.add_argument("--eval-name", default="eval", help="the evaluation's directory under each variant")
    p.add_argument("--out", help="table: write the results as JSON here")
    p.add_argument("overrides", nargs="*", help="train overrides (after --)")
    args = p.parse_args()
    {"split": split, "table": table}.get(args.step, lambda a: variant(a, args.step))(args)


if __name__ == "__main__":
    main()
