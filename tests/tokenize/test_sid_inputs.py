"""Tokenizer inputs as the papers build them: item text + attribute words, items without content,
RQ-KMeans residual normalisation, OPQ after PCA whitening, and the report's collision / entropy figures."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from omegaconf import OmegaConf

from distrec.config import compose
from distrec.data.dataset import PreparedData
from distrec.errors import ConfigError
from distrec.tokenize.config import EmbedConfig
from distrec.tokenize.embedders import TfidfEmbedder, embed_table, text_inputs
from distrec.tokenize.quantizers import load_quantizer
from distrec.tokenize.quantizers.pq import OPQ
from distrec.tokenize.quantizers.rq_kmeans import RQKMeans
from distrec.tokenize.report import quality_report


def catalog(titles, attributes) -> PreparedData:
    items = pa.table({"item_id": pa.array(range(1, len(titles) + 1), pa.int64()),
                      "title": pa.array(titles, pa.string()),
                      "attributes": pa.array(attributes, pa.list_(pa.int64()))})
    return PreparedData(Path("."), items, None, {"fields": {"title": "text", "attributes": "multi_categorical"}},
                        {}, {})


def clustered(n=2000, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(30, d))
    return (centers[rng.integers(0, 30, n)] + 0.2 * rng.normal(size=(n, d))).astype(np.float32)


# ------------------------------------------------------------------ item text

def test_attribute_fields_become_words_of_the_item_text():
    data = catalog(["red nail polish", None, "lip balm"], [[3, 7], [3], []])
    texts = text_inputs(data, ["title", "brand"], ["attributes", "genres"]).column("text").to_pylist()
    assert texts == ["red nail polish attributes_3 attributes_7", "attributes_3", "lip balm"]
    assert text_inputs(data, ["title"]).column("text").to_pylist()[1] == ""  # default: text fields only
    with pytest.raises(ConfigError, match="embed.attribute_fields: 'title' is a text field"):
        text_inputs(data, ["title"], ["title"])


def test_attributes_separate_items_with_equal_titles():
    titles = ["nail polish red", "nail polish red", "lip balm mint", "lip balm cherry", "shampoo dry hair",
              "shampoo oily hair", "face cream night", "face cream day"]
    data = catalog(titles, [[1], [2], [3], [3], [4], [4], [5], [5]])
    cfg = OmegaConf.structured(EmbedConfig(dim=6, attribute_fields=["attributes"]))
    embedder = TfidfEmbedder(cfg)
    inputs = embedder.inputs(data)
    x = embedder.fit(inputs).transform(inputs)
    assert not np.allclose(x[0], x[1])
    plain = TfidfEmbedder(OmegaConf.structured(EmbedConfig(dim=6)))
    y = plain.fit(plain.inputs(data)).transform(plain.inputs(data))
    np.testing.assert_allclose(y[0], y[1])  # titles alone cannot tell them apart


class _Blank:
    """An embedder whose items 2 and 4 have no content (all-zero vectors)."""

    def transform(self, items):
        x = np.ones((items.num_rows, 8), np.float32)
        x[np.isin(items.column("item_id").to_numpy(), [2, 4])] = 0
        return x


def test_items_without_content_get_a_fixed_random_unit_vector_and_are_flagged():
    items = pa.table({"item_id": pa.array([1, 2, 3, 4], pa.int64())})
    table = embed_table(_Blank(), items, do_normalize=True, seed=0)
    x = np.asarray(table.column("vector").combine_chunks().flatten()).reshape(4, 8)
    assert table.column("no_content").to_pylist() == [False, True, False, True]
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, rtol=1e-5)  # none is all zero
    assert not np.allclose(x[1], x[3])  # no shared point: they do not all get one semantic ID
    alone = embed_table(_Blank(), items.slice(3), do_normalize=True, seed=0)  # another batch, same vector
    np.testing.assert_allclose(np.asarray(alone.column("vector").combine_chunks().flatten()), x[3])


# ------------------------------------------------------------------ RQ-KMeans

def test_rq_kmeans_normalises_residuals_by_default():
    for name in ("rq_kmeans", "rq_kmeans_128"):
        assert compose([f"tokenizer={name}"]).tokenizer.normalize_residuals is True
    x = clustered()
    scaled = x * np.random.default_rng(1).uniform(0.1, 10, (len(x), 1)).astype(np.float32)
    normalised = RQKMeans(3, 16, iters=10, normalize_residuals=True, progress=False)
    # each level clusters directions: rescaling an item's vector does not change its codes
    assert (normalised.fit(x).encode(x) == normalised.fit(scaled).encode(scaled)).all(1).mean() > 0.99
    plain = RQKMeans(3, 16, iters=10, normalize_residuals=False, progress=False)
    assert (plain.fit(x).encode(x) == plain.fit(scaled).encode(scaled)).all(1).mean() < 0.5
    dist = normalised.last_level_distances(scaled[:20])
    assert np.array_equal(dist.argmin(1), normalised.encode(scaled[:20])[:, -1])


# ------------------------------------------------------------------ OPQ with PCA whitening

def test_opq_config_is_rpgs_pca_whitened_16_dims_per_subspace():
    t = compose(["tokenizer=opq"]).tokenizer
    assert (t.pq.pca_dim, t.pq.pca_whiten, t.pq.num_subspaces, t.codebook_size) == (512, True, 32, 256)
    assert t.pq.pca_dim // t.pq.num_subspaces == 16


def test_opq_whitens_before_rotating_and_survives_save_load(tmp_path):
    x = clustered(d=48)
    x[:, :3] *= 20  # a few directions carry most of the variance
    q = OPQ(4, 16, opq_iters=3, pca_dim=32).fit(x)
    mean, components, scale = q.pca
    z = (x - mean) @ components.T * scale
    np.testing.assert_allclose(z.var(0), 1, rtol=0.01)  # every kept component has unit variance
    assert q.pq.d == 32 and q.pq.dsub == 8
    codes = q.encode(x)
    assert np.square(x - q.decode(codes)).sum() / np.square(x).sum() < 0.5
    q.save(tmp_path / "opq")
    assert np.array_equal(load_quantizer(tmp_path / "opq").encode(x), codes)
    unwhitened = OPQ(4, 16, opq_iters=3, pca_dim=32, pca_whiten=False).fit(x)
    np.testing.assert_allclose(unwhitened.pca[2], 1)


def test_opq_pca_dim_larger_than_the_embedding_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"tokenizer.pq.pca_dim=64 is larger than the embedding dimension 32.*embed.dim"):
        OPQ(4, 16, pca_dim=64).fit(clustered())


# ------------------------------------------------------------------ the quality report

def test_report_states_collisions_and_conditional_entropy():
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 0]])
    report = quality_report(codes, [2, 2])
    assert report["collision_rate"] == 0.25  # item 4 repeats item 3's code
    assert report["items_in_collisions"] == 0.5
    h = [level["conditional_entropy_bits"] for level in report["per_level"]]
    assert h == pytest.approx([1.0, 0.5])  # H(c_2 | c_1): 1 bit under prefix 0, 0 under prefix 1
