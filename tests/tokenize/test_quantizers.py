"""Every quantizer behind one interface: fit/encode/decode/save/load, and clear errors."""

import numpy as np
import pytest

from distrec.errors import ConfigError, DataError
from distrec.tokenize.quantizers import build_quantizer, load_quantizer
from distrec.tokenize.quantizers.pq import OPQ, PQ
from distrec.tokenize.quantizers.rq_kmeans import RQKMeans
from distrec.tokenize.quantizers.rq_vae import RQVAE


def clustered(n=3000, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(40, d))
    return (centers[rng.integers(0, 40, n)] + 0.2 * rng.normal(size=(n, d))).astype(np.float32)


QUANTIZERS = {
    "rq_kmeans": lambda: RQKMeans(3, 16, iters=10, progress=False),
    "rq_vae": lambda: RQVAE(2, 16, hidden=[64], latent=8, epochs=20, lr=5e-3, batch_size=512, progress=False),
    "pq": lambda: PQ(8, 16),
    "opq": lambda: OPQ(8, 16, opq_iters=5),
}


@pytest.mark.parametrize("method", sorted(QUANTIZERS))
def test_fit_encode_decode_save_load(method, tmp_path):
    x = clustered()
    q = QUANTIZERS[method]().fit(x)
    codes = q.encode(x)
    assert codes.shape == (len(x), len(q.codebook_sizes)) and codes.dtype == np.int64
    assert (codes >= 0).all() and (codes < np.array(q.codebook_sizes)).all()
    rel = np.square(x - q.decode(codes)).sum() / np.square(x).sum()
    assert rel < 0.5, rel  # reconstructs far better than the zero vector
    dist = q.last_level_distances(x[:5])
    assert dist.shape == (5, q.codebook_sizes[-1])
    assert np.array_equal(dist.argmin(1), codes[:5, -1])  # the chosen last code is the nearest one
    q.save(tmp_path / method)
    loaded = load_quantizer(tmp_path / method)
    assert np.array_equal(loaded.encode(x), codes)


def test_pq_codes_unpack_for_non_byte_codebooks():
    x = clustered(d=16)
    q = PQ(4, 32).fit(x)  # 5-bit codes, packed by faiss
    codes = q.encode(x)
    assert codes.max() < 32 and len(np.unique(codes[:, 0])) > 16
    assert np.square(x - q.decode(codes)).sum() / np.square(x).sum() < 0.3


def test_rq_kmeans_plug_in_assignment_hook():
    """The per-level hook (GAOQ's balanced, aligned codes) replaces nearest-centroid assignment."""
    from distrec.clustering.kmeans import KMeansWorker, LocalPool, residual_kmeans
    from distrec.clustering.vectors import VectorShards

    calls = []

    def reversed_codes(level, x, centroids, prefix):
        calls.append((level, prefix.shape[1]))
        return (len(centroids) - 1 - np.arange(len(x)) % len(centroids)).astype(np.int64)

    worker = KMeansWorker(VectorShards(array=clustered(500)), assign_codes=reversed_codes)
    codebooks, _ = residual_kmeans(LocalPool([worker]), 2, 8, 3, progress=False)
    _, codes, _, _ = worker.encode(codebooks)
    assert codes[:3, 0].tolist() == [7, 6, 5]
    assert (1, 1) in calls  # level 1 sees the level-0 prefix


def test_build_from_config_and_unknown_method():
    from omegaconf import OmegaConf

    from distrec.tokenize.config import PQConfig, TokenizerConfig

    cfg = OmegaConf.structured(TokenizerConfig(method="opq", pq=PQConfig(num_subspaces=8)))
    assert isinstance(build_quantizer(cfg, progress=False), OPQ)
    cfg.method = "nope"
    with pytest.raises(ConfigError, match="tokenizer.method='nope'"):
        build_quantizer(cfg)


@pytest.mark.parametrize("method", sorted(QUANTIZERS))
def test_errors(method):
    q = QUANTIZERS[method]()
    with pytest.raises(DataError, match="empty"):
        q.fit(np.zeros((0, 32), np.float32))
    with pytest.raises(ConfigError, match="larger than the catalog"):
        q.fit(clustered(10))
    bad = clustered()
    bad[3, 0] = np.inf
    with pytest.raises(DataError, match="row 3 has a NaN or inf"):
        q.fit(bad)
    q.fit(clustered(300))
    with pytest.raises(DataError, match="dimension 16"):
        q.encode(clustered(d=16))


def test_pq_subspaces_must_divide_dim():
    with pytest.raises(ConfigError, match="must divide the embedding dimension 30"):
        PQ(8, 16).fit(clustered(d=30))
