"""GAOQ: anchors, Hungarian matching, global alignment, zero collisions, persistence."""

import itertools

import numpy as np
import pytest

from distrec.clustering.hungarian import make_anchors, match_to_anchors, unit_rows
from distrec.errors import ConfigError
from distrec.tokenize.quantizers import build_quantizer, load_quantizer
from distrec.tokenize.quantizers.gaoq import GAOQ, HKMeansLocal, derive_branching


@pytest.mark.parametrize("b,g", [(3, 3), (4, 6), (6, 6), (2, 5)])
def test_hungarian_is_optimal_against_brute_force(b, g):
    rng = np.random.default_rng(b * 10 + g)
    for trial in range(5):
        children, anchors = rng.standard_normal((b, 5)), rng.standard_normal((g, 5))
        cos = unit_rows(children) @ unit_rows(anchors).T
        codes = match_to_anchors(children, anchors)
        assert len(set(codes.tolist())) == b  # injective
        best = max(sum(cos[i, p[i]] for i in range(b)) for p in itertools.permutations(range(g), b))
        assert cos[np.arange(b), codes].sum() == pytest.approx(best, abs=1e-9)


def test_anchors_orthonormal_and_fallback_unit_norm():
    a = make_anchors(32, 20, seed=0)
    np.testing.assert_allclose(a @ a.T, np.eye(20), atol=1e-5)
    np.testing.assert_array_equal(a, make_anchors(32, 20, seed=0))  # seeded
    wide = make_anchors(8, 20, seed=1)  # more codes than dimensions: blocks of orthonormal bases
    np.testing.assert_allclose(np.linalg.norm(wide, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(wide[:8] @ wide[:8].T, np.eye(8), atol=1e-5)


def shared_directions(num_parents=8, num_dirs=4, per_child=6, dim=16, seed=0):
    """Parents far apart; under each parent, children along the SAME num_dirs directions."""
    rng = np.random.default_rng(seed)
    parents = rng.standard_normal((num_parents, dim)) * 50
    directions = np.linalg.qr(rng.standard_normal((dim, num_dirs)))[0].T * 5
    p = np.repeat(np.arange(num_parents), num_dirs * per_child)
    d = np.tile(np.repeat(np.arange(num_dirs), per_child), num_parents)
    x = parents[p] + directions[d] + rng.standard_normal((len(p), dim)) * 0.05
    return x.astype(np.float32), p, d


def test_same_direction_gets_same_code_under_every_parent():
    x, parent, direction = shared_directions()
    q = GAOQ(branching=[8, 4], progress=False).fit(x)
    codes = q.encode(x)
    assert len({(int(a), int(b)) for a, b in zip(parent, codes[:, 0])}) == 8  # level 0 = the parents
    code_of_direction = {}
    for d, c in zip(direction, codes[:, 1]):
        code_of_direction.setdefault(int(d), set()).add(int(c))
    assert all(len(c) == 1 for c in code_of_direction.values()), code_of_direction
    assert len({c.pop() for c in code_of_direction.values()}) == 4

    local = HKMeansLocal(branching=[8, 4], progress=False).fit(x)
    gaoq_var = q.stats["per_level"][0]["residual_var_given_code"]
    local_var = local.stats["per_level"][0]["residual_var_given_code"]
    assert gaoq_var < 0.1 * local_var  # an aligned code alone pins the direction; a local one does not
    assert q.stats["per_level"][0]["prefix_ambiguity_bits"] < local.stats["per_level"][0]["prefix_ambiguity_bits"]
    assert q.stats["per_level"][-1]["prefix_ambiguity_bits"] is None  # one item per leaf: undefined


def test_zero_collisions_and_codes_in_range():
    x = np.random.default_rng(3).standard_normal((3000, 24)).astype(np.float32)
    x[7] = x[5]  # two items with the same vector still get distinct SIDs
    q = GAOQ(progress=False).fit(x)
    assert q.branching == [14, 14, 16]
    codes = q.encode(x)
    assert len(np.unique(codes, axis=0)) == len(x)
    assert (codes >= 0).all() and (codes < np.array(q.codebook_sizes)).all()
    perm = np.random.default_rng(0).permutation(len(x))
    recoded = q.encode(x[perm])
    assert len(np.unique(recoded, axis=0)) == len(x)
    np.testing.assert_array_equal(np.delete(recoded, np.flatnonzero(np.isin(perm, [5, 7])), 0),
                                  np.delete(codes[perm], np.flatnonzero(np.isin(perm, [5, 7])), 0))


def test_save_load_and_new_items(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((600, 8)).astype(np.float32)
    q = GAOQ(branching=[4, 4, 45], progress=False).fit(x)  # <= 38 items per node: free leaves left
    q.save(tmp_path)
    loaded = load_quantizer(tmp_path)
    np.testing.assert_array_equal(loaded.encode(x), q.encode(x))
    new = loaded.encode(rng.standard_normal((3, 8)).astype(np.float32))
    fitted = {tuple(c) for c in q.encode(x).tolist()}
    assert all(tuple(c) not in fitted for c in new.tolist())  # a free leaf under the nearest prefix
    assert loaded.last_level_distances(x[:2]).shape == (2, loaded.codebook_sizes[-1])


def test_branching_rules():
    assert derive_branching(24_000, 3, [32, 40]) == [32, 40, 19]
    assert derive_branching(24_000, 3, [32, 40, 19]) == [32, 40, 19]
    with pytest.raises(ConfigError, match="collide"):
        derive_branching(24_000, 3, [32, 40, 10])
    with pytest.raises(ConfigError, match="entries"):
        derive_branching(24_000, 3, [32])
    b = derive_branching(1_000_000, 3)
    assert 10 <= 1_000_000 / (b[0] * b[1]) <= 20 and b[0] * b[1] * b[2] >= 1_000_000


def test_built_from_config():
    from distrec.config import compose

    for method in ("gaoq", "hkmeans_local"):
        cfg = compose([f"tokenizer={method}", "tokenizer.gaoq.branching=[4,4]"])
        q = build_quantizer(cfg.tokenizer, progress=False)
        assert q.method == method and q.branching_cfg == [4, 4]


@pytest.mark.ray
def test_ray_subtrees_match_in_process(ray_local):
    from distrec.parallel.executor import OnRay

    x = np.random.default_rng(5).standard_normal((2000, 16)).astype(np.float32)
    local = GAOQ(branching=[6, 5], progress=False).fit(x)
    distributed = GAOQ(branching=[6, 5], progress=False).run_on(OnRay(2)).fit(x)
    np.testing.assert_array_equal(distributed.encode(x), local.encode(x))
    np.testing.assert_array_equal(distributed.node_centroids, local.node_centroids)
