"""An autoencoder as an embedding: MLP encoder and decoder trained on the reconstruction error.

The paper's sciplex3 settings (CellOT's): hidden ``(512, 512)``, latent 50, Adam lr 1e-3,
weight decay 1e-5; ``(32, 32)`` and 8 for inputs of fewer than :data:`~cellw1.pp.embedding.LOW_DIM`
features. Training stops early when the validation loss stops improving.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..checks import resolve_device
from ..ot.mlp import mlp
from ..ot.potential import adam_kernel
from ..ot.sampling import Cells, MemoryCells, minibatches
from ..ot.training import History, Training, fit_threads, read_history
from .embedding import ACTIVATIONS, CHUNK, LOW_DIM, Embedding, EmbeddingConfig

logger = logging.getLogger(__name__)


class AutoencoderNet(nn.Module):
    """Encoder ``g -> hidden -> latent`` and mirrored decoder ``latent -> hidden[::-1] -> g``."""

    def __init__(self, n_features: int, hidden: Sequence[int], latent: int, activation: str = "relu") -> None:
        super().__init__()
        self.n_features, self.latent, self.activation = int(n_features), int(latent), activation
        self.hidden = tuple(int(h) for h in hidden)
        self.encoder = mlp((self.n_features, *self.hidden, self.latent), ACTIVATIONS[activation])
        self.decoder = mlp((self.latent, *self.hidden[::-1], self.n_features), ACTIVATIONS[activation])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x: (n, g)``."""
        return self.decoder(self.encoder(x))


def autoencoder_step(net: AutoencoderNet, optimizer: torch.optim.Optimizer, batch: torch.Tensor) -> torch.Tensor:
    """One Adam step on the mean squared reconstruction error of ``batch``; returns it (detached)."""
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(net(batch), batch)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def reconstruction_error(net: AutoencoderNet, x: torch.Tensor, chunk: int = CHUNK) -> float:
    """Mean squared reconstruction error over all cells and features of ``x`` (full batch)."""
    total = x.new_zeros((), dtype=torch.float64)
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk]
        total += (net(block) - block).square().sum(dtype=torch.float64)
    return float(total) / max(x.numel(), 1)


def autoencoder_shape(n_features: int, config: EmbeddingConfig) -> tuple[tuple[int, ...], int]:
    """Hidden widths and latent size for ``n_features`` inputs (the paper's two settings)."""
    low = n_features < LOW_DIM
    hidden = config.ae_hidden or ((32, 32) if low else (512, 512))
    latent = config.ae_latent or (8 if low else 50)
    if latent >= n_features:
        logger.warning("autoencoder latent size %d is not smaller than the %d input features", latent, n_features)
    return tuple(hidden), int(latent)


class Autoencoder(Embedding):
    """An MLP autoencoder: ``encode`` is the encoder, ``decode`` the decoder.

    Parameters
    ----------
    net
        The trained :class:`AutoencoderNet` (put in evaluation mode, gradients off).
    info
        Fit diagnostics: ``steps``, ``best_step``, ``val_loss`` (the kept state's validation
        MSE), ``val_variance`` (mean feature variance of the validation cells, the MSE of
        predicting their mean), ``stopped_early``, ``seconds``.
    history
        Training history (:mod:`cellw1.ot.training`), one entry per validation evaluation:
        ``step``, ``train_loss`` (mean minibatch MSE since the previous evaluation),
        ``val_loss``, and ``best_step``, ``stopped_at``. Saved with the model.
    """

    kind = "autoencoder"

    def __init__(
        self, net: AutoencoderNet, info: dict[str, Any] | None = None, *, history: History | None = None
    ) -> None:
        self.net = net.requires_grad_(False).eval()
        super().__init__(net.n_features, net.latent, info)
        self.history: History = dict(history or {})

    @property
    def device(self) -> torch.device:
        """Device holding the networks."""
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> Autoencoder:
        """Move the networks to ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``); returns self."""
        self.net.to(resolve_device(device))
        return self

    @torch.no_grad()
    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self.net.encoder(torch.tensor(x, device=self.device)).cpu().numpy()

    @torch.no_grad()
    def _decode(self, z: np.ndarray) -> np.ndarray:
        return self.net.decoder(torch.tensor(z, device=self.device)).cpu().numpy()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The autoencoder's weights, detached copies on the CPU, by parameter name."""
        return {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def header(self) -> dict[str, Any]:
        """The JSON description saved beside the weights: the base header plus the network's sizes."""
        return {
            **super().header(),
            "hidden": list(self.net.hidden),
            "activation": self.net.activation,
            "history": self.history,
        }

    @classmethod
    def _from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Autoencoder:
        if header.get("activation") not in ACTIVATIONS:
            raise ValueError(f"unknown activation {header.get('activation')!r}")
        net = AutoencoderNet(int(header["n_features"]), header["hidden"], int(header["dim"]), header["activation"])
        net.load_state_dict(tensors)
        info, history = read_history(header)
        return cls(net, info, history=history)

    @classmethod
    def fit(
        cls, x: np.ndarray | Cells, *, config: EmbeddingConfig, seed: int = 0, progress: bool = False
    ) -> Autoencoder:
        """Train on ``x: (n, g)`` with minibatch Adam and early stopping.

        A shuffled ``ae_val_fraction`` of the cells is held out (all cells are used for
        validation too when there are too few to split). Every ``ae_eval_every`` steps the
        validation MSE is computed on all held-out cells; the best state is kept in memory and
        training stops ``ae_patience`` steps after the last improvement (rounded up to whole
        evaluations), or at ``ae_max_iters`` (:class:`~cellw1.ot.training.Training`).
        Initialisation, split and minibatches derive from ``seed`` only (the global torch RNG
        is left as it was), so a seed gives the same network on the CPU. ``x`` may also be
        :class:`~cellw1.ot.sampling.Cells` streamed from disk (normalised genes, on
        ``config.device``): minibatches then come from its buffers.
        """
        device = resolve_device(config.device)
        with fit_threads(config.cpu_threads, device):
            return cls._fit(x, config, seed, progress, device)

    @classmethod
    def _fit(
        cls, x: np.ndarray | Cells, config: EmbeddingConfig, seed: int, progress: bool, device: torch.device
    ) -> Autoencoder:
        """:meth:`fit` with the thread policy applied."""
        cells = x if isinstance(x, Cells) else MemoryCells(torch.tensor(x, device=device))
        hidden, latent = autoencoder_shape(cells.dim, config)
        generator = torch.Generator().manual_seed(seed)
        training, val = cells.split(config.ae_val_fraction, generator)
        n_train = cells.n_cells - len(val)
        if len(val) == 0:
            val = training.buffer()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = AutoencoderNet(cells.dim, hidden, latent, config.ae_activation).to(device)
        optimizer = torch.optim.Adam(
            net.parameters(), lr=config.ae_lr, weight_decay=config.ae_weight_decay, **adam_kernel(device)
        )
        batches = minibatches(training, config.ae_batch_size, config.ae_max_iters, generator)
        loop = Training(
            net,
            score="val_loss",
            mode="min",
            patience=math.ceil(config.ae_patience / config.ae_eval_every),
            name="autoencoder",
        )
        running, count, step = torch.zeros((), device=device), 0, 0
        bar = tqdm(range(1, config.ae_max_iters + 1), desc="autoencoder", disable=not progress, leave=False)
        start = time.perf_counter()
        for step in bar:
            running += autoencoder_step(net, optimizer, next(batches)[0])
            count += 1
            if step % config.ae_eval_every == 0 or step == config.ae_max_iters:
                val_loss = reconstruction_error(net, val)
                loop.evaluate(step, val_loss, train_loss=float(running) / count)
                running, count = running.zero_(), 0
                bar.set_postfix(val_mse=f"{val_loss:.4g}")
                if loop.stop:
                    break
        bar.close()
        seconds = time.perf_counter() - start
        stopped_early = loop.stop
        history = loop.finish(step)
        val_variance = float(val.var(dim=0).mean()) if len(val) > 1 else 0.0
        info = {
            "seed": seed,
            "n_cells": cells.n_cells,
            "n_train": n_train,
            "n_val": len(val),
            "steps": step,
            "max_iters": config.ae_max_iters,
            "stopped_early": stopped_early,
            "best_step": loop.best_step,
            "val_loss": loop.best_score,
            "val_variance": val_variance,
            "seconds": seconds,
            "ms_per_step": 1000.0 * seconds / max(step, 1),
            "config": config.to_dict(),
        }
        logger.info(
            "autoencoder %s -> %d: validation MSE %.4g (feature variance %.4g) at step %d of %d%s, %.1f s",
            (cells.dim, *hidden),
            latent,
            loop.best_score,
            val_variance,
            loop.best_step,
            step,
            " (early stop)" if stopped_early else "",
            seconds,
        )
        return cls(net, info, history=history)
