"""Record (or re-record) golden curves: `python tests/golden/update.py NAME [NAME ...]`.

Re-record only for a change meant to move a curve, and say why in the commit; the test then
guards the new curve. The spec part of the file (data, train, tolerance, why) is kept as written.
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from curves import CURVES, load, run_curve  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def main(names: list[str]) -> None:
    import os

    data_root = Path(os.environ.get("DISTREC_DATA", REPO.parent / "shared" / "data"))
    for name in names:
        spec = load(name)
        with tempfile.TemporaryDirectory() as tmp:
            spec["curve"] = run_curve(spec, Path(tmp), data_root)
        (CURVES / f"{name}.json").write_text(json.dumps(spec, indent=1) + "\n")
        print(f"{name}: " + ", ".join(f"{m} {v[-1][1]:.4f} at step {v[-1][0]}" for m, v in spec["curve"].items()))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
