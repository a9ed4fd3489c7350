"""PQ / OPQ long semantic IDs (RPG, ACERec): m unordered digits, one per sub-space, via faiss.

OPQ first learns a rotation that balances the variance across the m sub-spaces, then product-
quantizes the rotated vector; PQ skips the rotation. Codes of `codebook_size = 2**nbits` values are
unpacked from faiss's bit-packed bytes into one digit per sub-space.

`pca_dim > 0` projects the vectors on their top principal components first, scaled to unit variance
when `pca_whiten` (RPG: PCA to 512 with whitening, then OPQ 32 x 256: 16 dimensions per sub-space).
Whitened, every direction the PCA keeps gets the same share of the codes; without it the top few
components, which carry most of the variance, decide most digits. The PCA is fitted on the same items
as the quantizer.
"""

from __future__ import annotations

import faiss
import numpy as np

from distrec.errors import ConfigError
from distrec.tokenize.quantizers.base import Quantizer


class PQ(Quantizer):
    method = "pq"
    rotate = False

    def __init__(self, num_subspaces: int = 32, codebook_size: int = 256, seed: int = 0, opq_iters: int = 50,
                 pca_dim: int = 0, pca_whiten: bool = True, progress: bool = True):
        nbits = int(np.log2(codebook_size))
        if 2 ** nbits != codebook_size or not 1 <= nbits <= 16:
            raise ConfigError(f"tokenizer.codebook_size={codebook_size} must be a power of two (2..65536) for {self.method}")
        self.m, self.k, self.nbits, self.seed, self.opq_iters = num_subspaces, codebook_size, nbits, seed, opq_iters
        self.pca_dim, self.pca_whiten = pca_dim, pca_whiten
        self.pca = None  # (mean [d], components [pca_dim, d], scale [pca_dim])
        self.pq = None
        self.opq = None

    @property
    def codebook_sizes(self):
        return [self.k] * self.m

    @classmethod
    def from_config(cls, cfg, progress: bool = True):
        p = cfg.pq
        return cls(p.num_subspaces, cfg.codebook_size, cfg.seed, p.opq_iters, p.pca_dim, p.pca_whiten,
                   progress=progress)

    def _fit_pca(self, x):
        if self.pca_dim > x.shape[1]:
            raise ConfigError(f"tokenizer.pq.pca_dim={self.pca_dim} is larger than the embedding dimension {x.shape[1]}: "
                              f"embed with embed.dim >= {self.pca_dim}, or set tokenizer.pq.pca_dim <= {x.shape[1]} "
                              "(0 = no PCA)")
        mean = x.mean(0, dtype=np.float64).astype(np.float32)
        centred = x - mean
        eigval, eigvec = np.linalg.eigh((centred.T @ centred).astype(np.float64) / max(len(x) - 1, 1))
        top = np.argsort(eigval)[::-1][: self.pca_dim]
        variance = eigval[top]
        scale = np.ones(len(top))
        if self.pca_whiten:  # directions without spread (rank < pca_dim) are left as they are, not blown up
            scale = np.where(variance > 1e-10 * variance[0], 1 / np.sqrt(np.maximum(variance, 1e-30)), 1.0)
        self.pca = tuple(a.astype(np.float32) for a in (mean, eigvec[:, top].T, scale))

    def _transform(self, x):
        """PCA (+ whitening), then the OPQ rotation: the space the codes live in."""
        if self.pca is not None:
            mean, components, scale = self.pca
            x = np.ascontiguousarray((x - mean) @ components.T * scale, dtype=np.float32)
        return self.opq.apply_py(x) if self.opq is not None else x

    def fit(self, x):
        x = self.check_input(x, self.k)
        self.pca = self.opq = None
        if self.pca_dim:
            self._fit_pca(x)
        z = self._transform(x)
        d = z.shape[1]
        if d % self.m:
            raise ConfigError(f"tokenizer.pq.num_subspaces={self.m} must divide the embedding dimension {d}"
                              + (" (tokenizer.pq.pca_dim)" if self.pca_dim else ""))
        if self.rotate:
            self.opq = faiss.OPQMatrix(d, self.m)
            self.opq.niter = self.opq_iters
            self.opq.verbose = False
            self.opq.train(z)
        self.pq = faiss.ProductQuantizer(d, self.m, self.nbits)
        self.pq.cp.seed = self.seed
        self.pq.train(self._transform(x))
        return self

    def encode(self, x):
        x = self.check_input(x)
        self.check_dim(x, self.pq.d if self.pca is None else len(self.pca[0]))
        packed = self.pq.compute_codes(self._transform(x))
        if self.nbits == 8:
            return packed.astype(np.int64)
        bits = np.unpackbits(packed, axis=1, bitorder="little")[:, : self.m * self.nbits]
        return (bits.reshape(len(x), self.m, self.nbits).astype(np.int64) << np.arange(self.nbits)).sum(-1)

    def _pack(self, codes):
        if self.nbits == 8:
            return np.ascontiguousarray(codes, dtype=np.uint8)
        bits = ((codes[:, :, None] >> np.arange(self.nbits)) & 1).astype(np.uint8).reshape(len(codes), -1)
        return np.packbits(bits, axis=1, bitorder="little")[:, : self.pq.code_size]

    def decode(self, codes):
        x = self.pq.decode(self._pack(np.asarray(codes)))
        if self.opq is not None:
            x = self.opq.reverse_transform(x)
        if self.pca is not None:
            mean, components, scale = self.pca
            x = (x / scale) @ components + mean
        return x

    def last_level_distances(self, x):
        z = self._transform(self.check_input(x))
        dsub = self.pq.dsub
        centroids = faiss.vector_to_array(self.pq.centroids).reshape(self.m, self.k, dsub)[-1]
        sub = z[:, -dsub:]
        return ((sub[:, None, :] - centroids[None]) ** 2).sum(-1)

    def _state(self):
        arrays = {"pq_centroids": faiss.vector_to_array(self.pq.centroids),
                  "pq_d": np.array(self.pq.d)}
        if self.opq is not None:
            arrays["opq_A"] = faiss.vector_to_array(self.opq.A)
        if self.pca is not None:
            arrays.update(zip(("pca_mean", "pca_components", "pca_scale"), self.pca))
        return dict(num_subspaces=self.m, codebook_size=self.k, seed=self.seed, opq_iters=self.opq_iters,
                    pca_dim=self.pca_dim, pca_whiten=self.pca_whiten), arrays

    def _load_state(self, params, arrays, directory):
        self.__init__(**params, progress=False)
        d = int(arrays["pq_d"])
        self.pq = faiss.ProductQuantizer(d, self.m, self.nbits)
        faiss.copy_array_to_vector(arrays["pq_centroids"].astype(np.float32), self.pq.centroids)
        if "opq_A" in arrays:
            self.opq = faiss.OPQMatrix(d, self.m)
            faiss.copy_array_to_vector(arrays["opq_A"].astype(np.float32), self.opq.A)
            self.opq.is_trained = True
            self.opq.is_orthonormal = True
        if "pca_mean" in arrays:
            self.pca = (arrays["pca_mean"], arrays["pca_components"], arrays["pca_scale"])


class OPQ(PQ):
    method = "opq"
    rotate = True
