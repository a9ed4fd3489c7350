"""Quality report of a tokenization: what quality.json holds and how it prints.

For the codes before de-duplication: collision rate and the largest group sharing one SID; per level,
codebook utilisation, entropy H(c_l) (bits, and normalised by log2 K) and the prefix-conditional
entropy H(c_l | c_<l) = H(c_<=l) - H(c_<l) (how much a digit still says once its prefix is known);
the reconstruction error where the quantizer has a decoder; timings per phase.

    python -m distrec.tokenize.report runs/a/sids runs/b/sids   # two tokenizers side by side
"""

from __future__ import annotations

import sys

import numpy as np

from distrec.artifacts import read_json
from distrec.tokenize.sid_table import row_keys


def entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def prefix_counts(codes: np.ndarray, depth: int) -> np.ndarray:
    if depth == 0:
        return np.array([len(codes)])
    return np.unique(row_keys(codes[:, :depth]), return_counts=True)[1]


def quality_report(codes: np.ndarray, codebook_sizes: list[int], *, sq_err: float | None = None,
                   sq_norm: float | None = None, timings: dict | None = None, dedup: dict | None = None,
                   method: str = "") -> dict:
    """`codes`: int [n, L] before de-duplication. `sq_err`/`sq_norm`: summed squared reconstruction
    error and squared vector norm over the catalog (None when the quantizer has no decoder)."""
    n, levels = codes.shape
    sid_sizes = prefix_counts(codes, levels)
    report = {
        "method": method,
        "num_items": int(n),
        "levels": int(levels),
        "codebook_sizes": [int(k) for k in codebook_sizes],
        "unique_sids": int(len(sid_sizes)),
        "collision_rate": float(1 - len(sid_sizes) / n),  # items sharing an SID with an earlier item
        "items_in_collisions": float(sid_sizes[sid_sizes > 1].sum() / n),
        "max_items_per_sid": int(sid_sizes.max()),
        "per_level": [],
    }
    h_prev = 0.0
    for level in range(levels):
        k = int(codebook_sizes[level])
        counts = np.bincount(codes[:, level], minlength=k)
        h_joint = entropy_bits(prefix_counts(codes, level + 1))
        h = entropy_bits(counts)
        report["per_level"].append({
            "level": level,
            "codebook_size": k,
            "used_codes": int((counts > 0).sum()),
            "utilisation": float((counts > 0).mean()),
            "entropy_bits": h,
            "entropy_normalised": h / np.log2(k) if k > 1 else 0.0,
            "conditional_entropy_bits": h_joint - h_prev,  # H(c_l | c_<l)
            "max_code_share": float(counts.max() / n),
        })
        h_prev = h_joint
    if sq_err is not None:
        report["reconstruction"] = {"mse": float(sq_err / n),
                                    "relative_mse": float(sq_err / sq_norm) if sq_norm else None}
    if dedup is not None:
        report["dedup"] = dedup
    if timings is not None:
        report["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    return report


def _rows(report: dict) -> list[tuple[str, str]]:
    rows = [("method", report.get("method", "")), ("items", f"{report['num_items']:,}"),
            ("codebook sizes", "x".join(map(str, report["codebook_sizes"][:4]))
             + ("..." if len(report["codebook_sizes"]) > 4 else "")),
            ("collision rate (before dedup)", f"{report['collision_rate']:.4%}"),
            ("items in collisions (before dedup)", f"{report['items_in_collisions']:.4%}"),
            ("max items per SID", str(report["max_items_per_sid"]))]
    if "dedup" in report:
        d = report["dedup"]
        rows.append(("dedup: kind / digits / collisions left",
                     f"{d.get('kind')} / {d.get('levels_after')} / {d.get('collisions_after')}"))
    if "reconstruction" in report:
        r = report["reconstruction"]
        rows.append(("reconstruction rel. MSE", f"{r['relative_mse']:.4f}" if r["relative_mse"] is not None else "-"))
    per_level = report["per_level"]
    shown = per_level if len(per_level) <= 4 else per_level[:2] + per_level[-2:]
    for p in shown:
        rows.append((f"level {p['level']} util / H / H(c|prefix)",
                     f"{p['utilisation']:.1%} / {p['entropy_bits']:.2f} / {p['conditional_entropy_bits']:.2f} bits"))
    for name, secs in report.get("timings_s", {}).items():
        rows.append((f"time {name}", f"{secs:.2f} s"))
    return rows


def format_report(report: dict) -> str:
    return compare({"": report})


def compare(reports: dict[str, dict]) -> str:
    """Several reports side by side (rows aligned by name)."""
    tables = {name: dict(_rows(r)) for name, r in reports.items()}
    keys = []
    for t in tables.values():
        keys += [k for k in t if k not in keys]
    width = max(map(len, keys))
    cols = [max(len(name), *(len(t.get(k, "-")) for k in keys)) for name, t in tables.items()]
    lines = [" " * width + "  " + "  ".join(n.rjust(c) for n, c in zip(tables, cols))] if len(tables) > 1 else []
    for k in keys:
        lines.append(k.ljust(width) + "  " + "  ".join(t.get(k, "-").rjust(c) for t, c in zip(tables.values(), cols)))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    reports = {path: read_json(f"{path}/quality.json") for path in argv}
    print(compare(reports))


if __name__ == "__main__":
    main(sys.argv[1:])
