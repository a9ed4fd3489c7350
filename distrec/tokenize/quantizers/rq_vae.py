"""RQ-VAE (TIGER): an MLP auto-encoder whose latent is quantized by residual codebooks.

loss = ||x - dec(z_q)||^2 + sum_l ||sg(r_l) - e_l||^2 + beta * ||r_l - sg(e_l)||^2, where r_l is the
level-l residual of the latent and e_l its nearest code; the straight-through estimator copies the
decoder's gradient to the encoder. Codebooks start from residual k-means on the encoded catalog, and
codes unused during an epoch are re-initialised to residuals of random items (dead-code restart),
which is what keeps utilisation high. The MLPs run under bf16 autocast on CPU (AVX-512 bf16 / AMX); codebook
distances stay in fp32.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from distrec.tokenize.quantizers.base import Quantizer
from distrec.tokenize.quantizers.rq_kmeans import RQKMeans


def mlp(sizes: list[int]) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAEModel(nn.Module):
    def __init__(self, dim: int, hidden: list[int], latent: int, levels: int, codebook_size: int):
        super().__init__()
        self.encoder = mlp([dim, *hidden, latent])
        self.decoder = mlp([latent, *reversed(hidden), dim])
        self.codebooks = nn.Parameter(torch.zeros(levels, codebook_size, latent))

    def quantize(self, z: torch.Tensor):
        """Residual quantization of z (fp32): (z_q, codes [n, L], residuals [L, n, latent], codebook loss parts)."""
        residual = z
        codes, residuals, quantized = [], [], []
        for codebook in self.codebooks:
            dist = torch.cdist(residual.detach(), codebook.detach())
            code = dist.argmin(dim=1)
            e = codebook[code]
            codes.append(code)
            residuals.append(residual)
            quantized.append(e)
            residual = residual - e.detach()
        return torch.stack(codes, 1), torch.stack(residuals), torch.stack(quantized)

    def forward(self, x: torch.Tensor, beta: float, bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z = self.encoder(x)
        z = z.float()
        codes, residuals, quantized = self.quantize(z)
        codebook_loss = ((residuals.detach() - quantized) ** 2).sum(-1).mean(-1).sum()
        commitment = ((residuals - quantized.detach()) ** 2).sum(-1).mean(-1).sum()
        z_q = z + (quantized.sum(0) - z).detach()  # straight-through estimator
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            x_hat = self.decoder(z_q)
        recon = ((x_hat.float() - x) ** 2).sum(-1).mean()
        loss = recon + codebook_loss + beta * commitment
        return loss, {"recon": recon.item(), "codebook": codebook_loss.item()}, codes, residuals


class RQVAE(Quantizer):
    method = "rq_vae"

    def __init__(self, levels=3, codebook_size=256, hidden=(512, 256, 128), latent=32, beta=0.25, epochs=200,
                 lr=1e-3, batch_size=1024, bf16=True, seed=0, progress=True):
        self.levels, self.k, self.hidden, self.latent = levels, codebook_size, list(hidden), latent
        self.beta, self.epochs, self.lr, self.batch_size = beta, epochs, lr, batch_size
        self.bf16, self.seed, self.progress = bf16, seed, progress
        self.model = None
        self.history = []  # per-epoch loss and per-level utilisation

    @property
    def codebook_sizes(self):
        return [self.k] * self.levels

    @classmethod
    def from_config(cls, cfg, progress: bool = True):
        r = cfg.rqvae
        return cls(cfg.levels, cfg.codebook_size, r.hidden, r.latent, r.beta, r.epochs, r.lr, r.batch_size, r.bf16,
                   cfg.seed, progress)

    def _encode_latent(self, x: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.model.encoder(torch.from_numpy(x[i:i + 65536]))
                              for i in range(0, len(x), 65536)]).float()

    def fit(self, x):
        x = self.check_input(x, self.k)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.model = RQVAEModel(x.shape[1], self.hidden, self.latent, self.levels, self.k)
        # codebooks from residual k-means on the (untrained) encoder's latents: no code starts dead
        init = RQKMeans(self.levels, self.k, iters=10, seed=self.seed, progress=False).fit(self._encode_latent(x).numpy())
        with torch.no_grad():
            self.model.codebooks.copy_(torch.from_numpy(init.codebooks))
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        data = torch.from_numpy(x)
        restart_until = int(self.epochs * 0.9)  # leave the last epochs to settle the restarted codes
        bar = tqdm(range(self.epochs), desc="rq-vae", unit="epoch", disable=not self.progress)
        for epoch in bar:
            used = torch.zeros(self.levels, self.k, dtype=torch.bool)
            total = 0.0
            for idx in torch.from_numpy(rng.permutation(len(x))).split(self.batch_size):
                loss, parts, codes, residuals = self.model(data[idx], self.beta, self.bf16)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
                used[torch.arange(self.levels)[:, None], codes.T] = True
            if epoch < restart_until:
                self._restart_dead_codes(used, residuals.detach(), rng)
            util = used.float().mean(1).tolist()
            self.history.append({"epoch": epoch, "loss": total / len(x), "utilisation": util})
            bar.set_postfix(loss=f"{total / len(x):.4f}", util="/".join(f"{u:.2f}" for u in util))
        return self

    def _restart_dead_codes(self, used: torch.Tensor, residuals: torch.Tensor, rng) -> None:
        """Move codes no item chose this epoch onto residuals of random items of the last batch."""
        with torch.no_grad():
            for level in range(self.levels):
                dead = (~used[level]).nonzero()[:, 0]
                if len(dead):
                    pick = torch.from_numpy(rng.integers(0, residuals.shape[1], len(dead)))
                    self.model.codebooks[level, dead] = residuals[level, pick]

    def encode(self, x):
        x = self.check_input(x)
        self.check_dim(x, self.model.encoder[0].in_features)
        with torch.no_grad():
            return self.model.quantize(self._encode_latent(x))[0].numpy().astype(np.int64)

    def decode(self, codes):
        codes = torch.from_numpy(np.asarray(codes, dtype=np.int64))
        with torch.no_grad():
            z_q = sum(self.model.codebooks[l][codes[:, l]] for l in range(self.levels))
            return self.model.decoder(z_q).numpy()

    def last_level_distances(self, x):
        with torch.no_grad():
            z = self._encode_latent(self.check_input(x))
            _, residuals, _ = self.model.quantize(z)
            return torch.cdist(residuals[-1], self.model.codebooks[-1]).pow(2).numpy()

    def _state(self):
        params = dict(levels=self.levels, codebook_size=self.k, hidden=self.hidden, latent=self.latent,
                      beta=self.beta, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, bf16=self.bf16,
                      seed=self.seed, dim=self.model.encoder[0].in_features)
        return params, {k: v.detach().numpy() for k, v in self.model.state_dict().items()}

    def _load_state(self, params, arrays, directory):
        params = dict(params)
        dim = params.pop("dim")
        self.__init__(**params, progress=False)
        self.model = RQVAEModel(dim, self.hidden, self.latent, self.levels, self.k)
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
