"""Real data (slow): GAOQ on Amazon Beauty text embeddings through the `tokenize` stage."""

import json

import pytest

from distrec.artifacts import read_json
from distrec.config import compose


@pytest.mark.slow
def test_gaoq_on_beauty_no_collisions_and_more_aligned_than_local_indices(tmp_path, data_root):
    from distrec.stages import embed, prepare, tokenize

    base = ["data=beauty", f"paths.root={tmp_path}", "progress=false", "embed=tfidf"]
    prepare.run(compose(base))
    embed.run(compose(base))
    stats = {}
    for method in ("gaoq", "hkmeans_local"):
        out = tokenize.run(compose(base + [f"tokenizer={method}", f"paths.sids={tmp_path}/sids_{method}"]))
        quality = read_json(out / "quality.json")
        assert quality["codebook_sizes"] == [28, 28, 16]
        assert quality["collision_rate"] == 0 and quality["dedup"]["collisions_after"] == 0
        stats[method] = json.loads((out / "codebooks" / "quantizer.json").read_text())["params"]["stats"]
        stats[method]["quality"] = quality
    g, h = stats["gaoq"], stats["hkmeans_local"]
    # same partition: the report's H(c_l | c_<l) cannot tell them apart ...
    for a, b in zip(g["quality"]["per_level"], h["quality"]["per_level"]):
        assert a["conditional_entropy_bits"] == pytest.approx(b["conditional_entropy_bits"], abs=0.02)
    # ... but an aligned code alone says more about the residual than a local index
    for a, b in zip(g["per_level"], h["per_level"]):
        assert a["residual_var_given_code"] < b["residual_var_given_code"]
