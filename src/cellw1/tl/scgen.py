"""The real scGen (Lotfollahi et al. 2019) as a baseline method, ``"scgen_vae"``, through the ``scgen`` package.

scGen trains a variational autoencoder on the control and the perturbed cells together,
takes ``delta = mean latent(perturbed) - mean latent(control)`` on a balanced subsample (as
many cells of each group) and predicts a control cell ``x`` as ``decode(encode(x) + delta)``
(the encoder's mean). Training and the latent arithmetic are the package's own
(``scgen.SCGEN.train`` and ``SCGEN.predict``); cellw1 keeps the trained network and
``delta`` so that a saved model predicts new cells without the training data.

The package (and scvi-tools, lightning and their pinned torch) is optional: install it with
``pip install "cellw1[scgen]"``, best in an environment of its own. Without it, fitting or
loading a ``scgen_vae`` model raises :class:`~cellw1.errors.MissingDependencyError`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, MissingDependencyError, ModelFileError
from ..ot.config import Config
from .fitted_method import FittedMethod

logger = logging.getLogger(__name__)

INSTALL = 'pip install "cellw1[scgen]"'
#: the group labels of the AnnData handed to scGen (a column it balances by holds one cell type)
CONTROL, PERTURBED, CELL_TYPE = "control", "perturbed", "all"


@dataclass(frozen=True)
class ScGenConfig(Config):
    """Settings of scGen's VAE and its training; the defaults are the ``scgen`` package's.

    Attributes
    ----------
    n_hidden, n_latent, n_layers, dropout_rate
        Width of the hidden layers, latent dimension, hidden layers of the encoder and the
        decoder, dropout (``scgen.SCGEN`` defaults: 800, 100, 2, 0.2).
    max_epochs, batch_size, early_stopping_patience
        Training: passes over the cells at most, cells per step, epochs without improvement
        of the validation loss before stopping (scGen's tutorial: 100, 32, 25).
    """

    n_hidden: int = 800
    n_latent: int = 100
    n_layers: int = 2
    dropout_rate: float = 0.2
    max_epochs: int = 100
    batch_size: int = 32
    early_stopping_patience: int = 25

    def __post_init__(self) -> None:
        for name in ("n_hidden", "n_latent", "n_layers", "max_epochs", "batch_size", "early_stopping_patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ConfigError(f"ScGenConfig.{name}={value!r} must be an integer >= 1.")
        if not (isinstance(self.dropout_rate, int | float) and 0 <= self.dropout_rate < 1):
            raise ConfigError(f"ScGenConfig.dropout_rate={self.dropout_rate!r} must be in [0, 1).")


def import_scgen() -> Any:
    """The ``scgen`` package, or a MissingDependencyError saying how to install it."""
    try:
        import scgen
    except ImportError as exc:
        raise MissingDependencyError(
            f"method 'scgen_vae' (the real scGen) needs the optional package 'scgen' ({exc}); "
            f"install it with: {INSTALL} (it brings scvi-tools and its own torch; a separate environment is best)."
        ) from exc
    return scgen


def _module(scgen: Any, n_input: int, config: ScGenConfig) -> Any:
    return scgen.SCGENVAE(
        n_input=n_input, n_hidden=config.n_hidden, n_latent=config.n_latent, n_layers=config.n_layers,
        dropout_rate=config.dropout_rate,
    )


class ScGenVAE(FittedMethod):
    """A trained scGen: its VAE (encoder and decoder) and the latent shift ``delta``."""

    name = "scgen_vae"

    def __init__(self, module: Any, delta: np.ndarray, config: ScGenConfig, n_input: int,
                 info: dict[str, Any] | None = None) -> None:
        super().__init__(info)
        self.module = module.eval()
        self.delta = np.asarray(delta, dtype=np.float32)
        self.config = config
        self.n_input = int(n_input)

    @torch.no_grad()
    def latent(self, x: np.ndarray) -> np.ndarray:
        """The encoder's mean for cells ``x: (n, genes)``, as ``SCGEN.get_latent_representation``."""
        mean, _, _ = self.module.z_encoder(torch.as_tensor(np.asarray(x, dtype=np.float32)))
        return mean.numpy()

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        z = torch.as_tensor(self.latent(x) + self.delta)
        return self.module.generative(z)["px"].numpy().astype(np.float32)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        tensors["delta"] = torch.from_numpy(self.delta)
        return tensors

    def header(self) -> dict[str, Any]:
        return {**super().header(), "config": self.config.to_dict(), "n_input": self.n_input}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> ScGenVAE:
        scgen = import_scgen()
        config = ScGenConfig.from_dict(header["config"])
        module = _module(scgen, int(header["n_input"]), config)
        state = {k[7:]: v for k, v in tensors.items() if k.startswith("module.")}
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelFileError(
                f"the scGen weights in the model file do not fit the installed scgen package (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}); refit the model with this version."
            )
        return cls(module, tensors["delta"].numpy(), config, int(header["n_input"]), header.get("info"))


def fit_scgen(source: np.ndarray, target: np.ndarray, config: ScGenConfig | None = None, seed: int = 0,
              *, progress: bool = False) -> ScGenVAE:
    """Train scGen on control ``source (n, k)`` and perturbed ``target (m, k)`` cells with the ``scgen`` package.

    ``scgen.SCGEN.setup_anndata`` with the group as batch and one cell type, ``SCGEN.train``
    with early stopping on a validation share, then ``SCGEN.predict`` for ``delta`` (its
    balanced subsample is drawn from numpy's global generator, seeded here by ``seed``
    through ``scvi.settings.seed``).
    """
    import anndata as ad
    import pandas as pd

    scgen = import_scgen()
    import scvi

    config = config or ScGenConfig()
    source = np.asarray(source, dtype=np.float32)
    target = np.asarray(target, dtype=np.float32)
    obs = pd.DataFrame({
        "condition": pd.Categorical([CONTROL] * len(source) + [PERTURBED] * len(target)),
        "cell_type": pd.Categorical([CELL_TYPE] * (len(source) + len(target))),
    })
    obs.index = [f"cell{i}" for i in range(len(obs))]
    adata = ad.AnnData(X=np.concatenate([source, target]), obs=obs)
    scvi.settings.seed = int(seed)
    quiet = [logging.getLogger(name) for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi")]
    levels = [log.level for log in quiet]
    try:
        for log in quiet:
            log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scgen.SCGEN.setup_anndata(adata, batch_key="condition", labels_key="cell_type")
            model = scgen.SCGEN(adata, n_hidden=config.n_hidden, n_latent=config.n_latent,
                                n_layers=config.n_layers, dropout_rate=config.dropout_rate)
            model.train(max_epochs=config.max_epochs, batch_size=config.batch_size, early_stopping=True,
                        early_stopping_patience=config.early_stopping_patience, accelerator="cpu",
                        enable_progress_bar=progress, enable_model_summary=False, logger=False)
            controls = adata[adata.obs["condition"] == CONTROL].copy()
            _, delta = model.predict(ctrl_key=CONTROL, stim_key=PERTURBED, adata_to_predict=controls)
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)
    epochs = len(model.history.get("train_loss_epoch", [])) if hasattr(model, "history") else None
    module = model.module.cpu()
    info = {"epochs": epochs, "n_balanced": int(min(len(source), len(target)))}
    logger.info("scGen trained for %s epochs", epochs)
    return ScGenVAE(module, np.asarray(delta, dtype=np.float32).reshape(-1), config, source.shape[1], info)
