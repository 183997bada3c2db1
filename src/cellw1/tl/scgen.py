"""The real scGen (Lotfollahi et al. 2019) as a baseline method, ``"scgen_vae"``, through ``pertpy.tl.Scgen``.

scGen trains a variational autoencoder on the control and the perturbed cells together,
takes ``delta = mean latent(perturbed) - mean latent(control)`` on a balanced subsample (as
many cells of each group) and predicts a control cell ``x`` as ``decode(encode(x) + delta)``
(the encoder's mean). Training and the latent arithmetic are pertpy's own (``Scgen.train``
and ``Scgen.predict``; pertpy's scGen is the scverse port of the ``scgen`` package, in
JAX); cellw1 keeps the trained network's variables and ``delta``, so that a saved model
predicts new cells without the training data (``predict`` applies pertpy's own encoder and
decoder to them, which reproduces ``Scgen.predict``).

The package (pertpy with scvi-tools, JAX and flax) is optional: install it with
``pip install "cellw1[scgen]"``, best in an environment of its own. Without it, fitting or
loading a ``scgen_vae`` model raises :class:`~cellw1.errors.MissingDependencyError`.
(The original ``scgen`` package on PyPI, 2.1.0, no longer imports with scvi-tools >= 1.0.)
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, MissingDependencyError
from ..files.model_files import tensors_under
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
    """Pertpy's ``Scgen`` class, or a MissingDependencyError saying how to install it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pertpy.tools import Scgen
    except ImportError as exc:
        raise MissingDependencyError(
            f"method 'scgen_vae' (the real scGen) needs the optional package pertpy ({exc}); "
            f"install it with: {INSTALL} (it brings scvi-tools, JAX and flax; a separate environment is best)."
        ) from exc
    return Scgen


def _network(n_input: int, config: ScGenConfig) -> Any:
    """Pertpy's scGen network in inference mode (batch-norm statistics fixed, no dropout)."""
    import_scgen()
    from pertpy.tools._scgen._scgenvae import JaxSCGENVAE

    return JaxSCGENVAE(
        n_input=n_input,
        n_hidden=config.n_hidden,
        n_latent=config.n_latent,
        n_layers=config.n_layers,
        dropout_rate=config.dropout_rate,
        training=False,
    )


class ScGenVAE(FittedMethod):
    """A trained scGen: its network's variables (weights and batch-norm statistics) and the latent shift ``delta``."""

    name = "scgen_vae"

    def __init__(
        self,
        variables: dict[str, np.ndarray],
        delta: np.ndarray,
        config: ScGenConfig,
        n_input: int,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(info)
        self.variables = {k: np.array(v, dtype=np.float32) for k, v in variables.items()}  # flat "params/encoder/..."
        self.delta = np.asarray(delta, dtype=np.float32)
        self.config = config
        self.n_input = int(n_input)
        self._net: Any = None

    def _apply(self, part: str, x: np.ndarray) -> np.ndarray:
        from flax import traverse_util

        if self._net is None:
            self._net = (_network(self.n_input, self.config), traverse_util.unflatten_dict(self.variables, sep="/"))
        net, variables = self._net
        if part == "encoder":
            out = net.apply(variables, x, method=lambda module, v: module.encoder(v)[0])  # the encoder's mean
        else:
            out = net.apply(variables, x, method=lambda module, v: module.decoder(v))
        return np.asarray(out, dtype=np.float32)

    def latent(self, x: np.ndarray) -> np.ndarray:
        """The encoder's mean for cells ``x: (n, genes)``, as ``Scgen.get_latent_representation``."""
        return self._apply("encoder", np.asarray(x, dtype=np.float32))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The prediction of scGen: each cell's latent code plus the learned shift, decoded."""
        return self._apply("decoder", self.latent(x) + self.delta)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The network's variables (``net.*``) and the latent shift, as tensors."""
        tensors = {f"net.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.variables.items()}
        tensors["delta"] = torch.from_numpy(self.delta)
        return tensors

    def header(self) -> dict[str, Any]:
        """The JSON description: the base header, the scGen config and the input size."""
        return {**super().header(), "config": self.config.to_dict(), "n_input": self.n_input}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> ScGenVAE:
        """The fitted scGen model from its saved tensors and header (needs the scgen extra)."""
        import_scgen()  # a clear error now rather than at the first prediction
        variables = {k: v.numpy() for k, v in tensors_under(tensors, "net.").items()}
        return cls(
            variables,
            tensors["delta"].numpy(),
            ScGenConfig.from_dict(header["config"]),
            int(header["n_input"]),
            header.get("info"),
        )


def fit_scgen(
    source: np.ndarray, target: np.ndarray, config: ScGenConfig | None = None, seed: int = 0, *, progress: bool = False
) -> ScGenVAE:
    """Train scGen on control ``source (n, k)`` and perturbed ``target (m, k)`` cells with pertpy.

    ``Scgen.setup_anndata`` with the group as batch and one cell type, ``Scgen.train`` with
    early stopping on a validation share (seeded by ``seed`` through
    ``scvi.settings.seed``), then ``Scgen.predict`` for ``delta``. pertpy draws the balanced
    subsample for ``delta`` from an unseeded generator: all cells of the smaller group and as
    many of the larger, so ``delta`` varies a little between runs when the groups differ in size.
    """
    import anndata as ad
    import pandas as pd

    Scgen = import_scgen()
    import scvi
    from flax import traverse_util

    config = config or ScGenConfig()
    source = np.asarray(source, dtype=np.float32)
    target = np.asarray(target, dtype=np.float32)
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical([CONTROL] * len(source) + [PERTURBED] * len(target)),
            "cell_type": pd.Categorical([CELL_TYPE] * (len(source) + len(target))),
        }
    )
    obs.index = [f"cell{i}" for i in range(len(obs))]
    adata = ad.AnnData(X=np.concatenate([source, target]), obs=obs)
    scvi.settings.seed = int(seed)
    quiet = [logging.getLogger(name) for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi", "jax")]
    levels = [log.level for log in quiet]
    try:
        for log in quiet:
            log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Scgen.setup_anndata(adata, batch_key="condition", labels_key="cell_type")
            model = Scgen(
                adata,
                n_hidden=config.n_hidden,
                n_latent=config.n_latent,
                n_layers=config.n_layers,
                dropout_rate=config.dropout_rate,
            )
            model.train(
                max_epochs=config.max_epochs,
                batch_size=config.batch_size,
                early_stopping=True,
                early_stopping_patience=config.early_stopping_patience,
                accelerator="cpu",
                enable_progress_bar=progress,
            )
            controls = adata[adata.obs["condition"] == CONTROL].copy()
            _, delta = model.predict(ctrl_key=CONTROL, stim_key=PERTURBED, adata_to_predict=controls)
    finally:
        for log, level in zip(quiet, levels, strict=False):
            log.setLevel(level)
    history = getattr(model, "history", None) or {}
    epochs = len(history["train_loss"]) if "train_loss" in history else None
    variables = traverse_util.flatten_dict({"params": model.module.params, **model.module.state}, sep="/")
    info = {"epochs": epochs, "n_balanced": int(min(len(source), len(target)))}
    logger.info("scGen trained for %s epochs", epochs)
    return ScGenVAE(
        {k: np.asarray(v) for k, v in variables.items()}, np.asarray(delta).reshape(-1), config, source.shape[1], info
    )
