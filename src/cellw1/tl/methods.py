"""Perturbation-prediction methods behind one signature, so a benchmark is one loop.

Every method is fitted by :func:`fit_method` on source (control) and target (perturbed)
cells in some feature space and returns a :class:`FittedMethod` that predicts perturbed
cells from control cells in that same space. Every method fits from the same
:class:`~cellw1.ot.sampling.Cells` sampler, so every method can stream its cells from disk:
the mean shift reads a balanced subsample a block at a time, observed reads the target cells,
W2 and W1 draw minibatches from buffers.

========== ===================================================================================
name       what it predicts
========== ===================================================================================
identity   the control cells themselves (no response): the ceiling any method must beat
observed   real perturbed cells from the training split (a seeded sample): the floor, not a
           predictor; it ignores its input
mean_shift the control cells shifted by the difference of group means on a balanced
           subsample, in the space the map is fitted in (the paper's "scGen" baseline: scGen's
           latent arithmetic without scGen's VAE)
scgen_vae  the real scGen (Lotfollahi et al. 2019): a VAE trained on both groups, control cells
           shifted in its latent space and decoded (:mod:`cellw1.tl.scgen`; optional, needs
           ``pip install "cellw1[scgen]"``)
w2         W2 optimal transport with input convex networks (CellOT / OT-ICNN)
w1         the W1 neural optimal transport map of cellw1
========== ===================================================================================

``"scgen"`` is a deprecated alias of ``"mean_shift"`` (the name of earlier releases): it
still works, with a FutureWarning, and is removed in the next release. Models saved under
that name load as ``mean_shift``.

The conditional W1 model (:mod:`cellw1.tl.conditional`) predicts each condition with a method
of its own, made from its fitted map rather than by :func:`fit_method`: :class:`AtCondition`,
the conditional map at one condition, and :class:`Blend`, the weighted sum of several methods'
changes (an unseen dose from the training doses, a combination from its members).
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from ..errors import ConfigError, ModelFileError
from ..ot.config import W1Config, W2Config
from ..ot.effect import EffectTest
from ..ot.sampling import Cells, checked_cells
from ..ot.solver import fit_map
from ..ot.training import History
from ..ot.transport import TransportMap
from ..ot.w2 import W2Map, fit_w2
from .fitted_method import FittedMethod, partway
from .scgen import ScGenConfig, ScGenVAE, fit_scgen

if TYPE_CHECKING:
    from ..ot.conditional import Condition, ConditionalMap

METHODS: tuple[str, ...] = ("identity", "observed", "mean_shift", "scgen_vae", "w2", "w1")
#: methods that move cells: they follow the perturbation's test for a response (:mod:`cellw1.ot.effect`)
GATED: tuple[str, ...] = ("mean_shift", "scgen_vae", "w2", "w1")
#: deprecated names -> their method; each still works for one release, with a FutureWarning
ALIASES: dict[str, str] = {"scgen": "mean_shift"}
#: name of the conditional W1 model's methods (:class:`AtCondition`, :class:`Blend`)
CONDITIONAL = "w1_conditional"


class Identity(FittedMethod):
    """No response: the prediction is the control cells."""

    name = "identity"

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return a copy of the control cells ``x: (n, k)``."""
        return np.array(x, dtype=np.float32, copy=True)

    @property
    def has_response(self) -> bool:
        """Never: identity predicts its input."""
        return False


class Observed(FittedMethod):
    """Real perturbed training cells, a seeded sample of as many cells as asked for."""

    name = "observed"

    def __init__(self, cells: np.ndarray, seed: int = 0, info: dict[str, Any] | None = None) -> None:
        super().__init__(info)
        self.cells = np.asarray(cells, dtype=np.float32)
        self.seed = int(seed)

    @classmethod
    def fit(cls, target: Cells, seed: int = 0) -> Observed:
        """Keep every target cell (read a block at a time)."""
        return cls(np.concatenate([block.cpu().numpy() for block in target.blocks()]), seed)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Draw as many training cells as ``x`` has (seeded), ignoring ``x``."""
        rng = np.random.default_rng(self.seed)
        idx = rng.choice(len(self.cells), size=len(x), replace=len(x) > len(self.cells))
        return self.cells[idx].copy()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Store the training cells."""
        return {"cells": torch.from_numpy(self.cells)}

    def header(self) -> dict[str, Any]:
        """Describe the method, with its seed."""
        return {**super().header(), "seed": self.seed}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Observed:
        """Rebuild the method from its cells and header."""
        return cls(tensors["cells"].numpy(), header.get("seed", 0), header.get("info"))


class MeanShift(FittedMethod):
    """The mean shift: add ``mean(target) - mean(source)`` to every cell.

    The means are taken on a balanced subsample (as many cells of each group), as the
    paper does to keep the larger group from dominating. This is scGen's latent arithmetic
    done in the space the map is fitted in, without scGen's VAE (that one is ``scgen_vae``).
    """

    name = "mean_shift"

    def __init__(self, shift: np.ndarray, info: dict[str, Any] | None = None) -> None:
        super().__init__(info)
        self.shift = np.asarray(shift, dtype=np.float32)

    @classmethod
    def fit(cls, source: Cells, target: Cells, seed: int = 0) -> MeanShift:
        """Fit the shift between the means of a seeded balanced subsample, read a block at a time."""
        rng = np.random.default_rng(seed)
        n = min(source.n_cells, target.n_cells)
        src = np.sort(rng.choice(source.n_cells, n, replace=False))
        tgt = np.sort(rng.choice(target.n_cells, n, replace=False))
        return cls((_mean(target, tgt) - _mean(source, src)).astype(np.float32), {"n_balanced": n})

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Shift every cell of ``x: (n, k)`` by the difference of means."""
        return (np.asarray(x, dtype=np.float32) + self.shift).astype(np.float32)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Store the shift."""
        return {"shift": torch.from_numpy(self.shift)}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> MeanShift:
        """Rebuild the method from its shift and header."""
        return cls(tensors["shift"].numpy(), header.get("info"))


class _NeuralMap(FittedMethod):
    """A fitted neural transport map (W1 or W2) used as a prediction method."""

    map_class: type[TransportMap] | type[W2Map]

    def __init__(self, tmap: TransportMap | W2Map) -> None:
        super().__init__(tmap.info)
        self.map = tmap

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.map.transport(np.asarray(x, dtype=np.float32)), dtype=np.float32)

    @property
    def history(self) -> History:
        """The map's training history (saved with the map)."""
        return self.map.history

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.map.state_tensors()

    def header(self) -> dict[str, Any]:
        return {**super().header(), "map": self.map.header()}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> _NeuralMap:
        fitted = cls(cls.map_class.from_state(tensors, header["map"]))
        fitted.info.update(header.get("info") or {})
        return fitted


class W1(_NeuralMap):
    """cellw1's W1 map, applied by the share of the response the training cells resolve.

    That share is :attr:`response_share`; the response is the distance moved, that share of the
    step size ``eta(x)``.
    """

    name = "w1"
    map_class = TransportMap
    map: TransportMap

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Move cells ``x: (n, k)`` by the map, :attr:`response_share` of the way."""
        x = np.asarray(x, dtype=np.float32)
        return partway(x, super().predict(x), self.response_share)

    def response(self, x: np.ndarray) -> np.ndarray:
        """Distance each cell moves: the share of the step size ``eta(x)``; ``(n,)``."""
        eta = np.asarray(self.map.step_size(np.asarray(x, dtype=np.float32)), dtype=np.float32)
        return np.float32(self.response_share) * eta

    @property
    def has_response(self) -> bool:
        """Whether the map found a response (:attr:`TransportMap.moves <cellw1.ot.transport.TransportMap.moves>`)."""
        return self.map.moves and super().has_response

    @property
    def response_share(self) -> float:
        """The map's resolved share with ``shrink_response``, else 1."""
        return self.map.resolved if self.map.config.shrink_response else 1.0


class W2(_NeuralMap):
    """W2 optimal transport with input convex networks (CellOT / OT-ICNN)."""

    name = "w2"
    map_class = W2Map


class AtCondition(FittedMethod):
    """The conditional map with one condition fixed, as a prediction method (cells in the fitted space).

    ``share``: the share of the map's displacement applied (``shrink_response``,
    :mod:`cellw1.ot.effect`), 1 for all of it.
    """

    name = CONDITIONAL

    def __init__(self, cmap: ConditionalMap, condition: Condition, share: float = 1.0) -> None:
        super().__init__(cmap.info)
        self.cmap, self.condition, self.share = cmap, condition, float(share)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Move cells ``x: (n, k)`` by the map at the condition (that share of the way)."""
        x = np.asarray(x, dtype=np.float32)
        moved = np.asarray(self.cmap.transport(x, self.condition), dtype=np.float32)
        return partway(x, moved, self.share)

    def response(self, x: np.ndarray) -> np.ndarray:
        """Distance each cell moves: the share of the step size ``eta(x)`` at the condition."""
        eta = np.asarray(self.cmap.step_size(np.asarray(x, dtype=np.float32), self.condition), dtype=np.float32)
        return np.float32(self.share) * eta

    @property
    def has_response(self) -> bool:
        """Whether the condition had a detected response (else the input is predicted)."""
        return self.cmap.moves(self.condition)

    @property
    def response_share(self) -> float:
        """The share of the displacement applied."""
        return self.share


class Blend(FittedMethod):
    """Each cell moved by the weighted displacements of several methods (cells in the fitted space).

    The written expression combines the parts' calibrated outputs with the same weights
    (:meth:`ConditionView.predict_values <cellw1.tl.conditional.views.ConditionView.predict_values>`);
    this class gives the fitted-space view.
    """

    name = CONDITIONAL

    def __init__(self, parts: list[FittedMethod], weights: np.ndarray, share: float = 1.0) -> None:
        super().__init__(parts[0].info)
        self.parts, self.weights, self.share = parts, np.asarray(weights, dtype=np.float32), float(share)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Move cells ``x: (n, k)`` by the parts' displacements, weighted."""
        x = np.asarray(x, dtype=np.float32)
        return blended(x, [part.predict(x) for part in self.parts], self.weights)

    @property
    def has_response(self) -> bool:
        """Whether any part moves cells."""
        return any(part.has_response for part in self.parts)

    @property
    def response_share(self) -> float:
        """The share of the displacement applied."""
        return self.share


def blended(x: np.ndarray, predictions: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """``x + sum_k w_k (predictions_k - x)``: displacements of several predictions, weighted."""
    out = np.array(x, dtype=np.float32)
    for predicted, weight in zip(predictions, weights, strict=True):
        out += np.float32(weight) * (predicted - x)
    return out


_CLASSES: dict[str, type[FittedMethod]] = {
    "identity": Identity,
    "observed": Observed,
    "mean_shift": MeanShift,
    "scgen_vae": ScGenVAE,
    "w2": W2,
    "w1": W1,
}


def check_method(name: str, *, stacklevel: int = 3) -> str:
    """Return the method's name: ``name`` itself, or for a deprecated alias (with a FutureWarning) its new name.

    Raises a ConfigError listing the methods when ``name`` is unknown.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"method must be a name, one of {', '.join(METHODS)}; got {name!r}.")
    if name in ALIASES:
        new = ALIASES[name]
        warnings.warn(
            f"method {name!r} is deprecated and will be removed in the next release: it is a mean shift, "
            f"not scGen's VAE; use method={new!r} (the same results), or 'scgen_vae' for the real scGen.",
            FutureWarning,
            stacklevel=stacklevel,
        )
        return new
    if name not in _CLASSES:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}.")
    return name


#: config class each method takes (the others take none)
CONFIGS: dict[str, type[W1Config] | type[W2Config] | type[ScGenConfig]] = {
    "w1": W1Config,
    "w2": W2Config,
    "scgen_vae": ScGenConfig,
}


def check_config(name: str, config: Any) -> type[W1Config] | type[W2Config] | type[ScGenConfig] | None:
    """Raise a ConfigError when ``config`` is not of the class method ``name`` takes; return that class."""
    expected = CONFIGS.get(name)
    if config is not None and expected is not None and not isinstance(config, expected):
        raise ConfigError(f"method {name!r} needs a {expected.__name__}, got {type(config).__name__}.")
    return expected


def _mean(cells: Cells, positions: np.ndarray, block: int = 8_192) -> np.ndarray:
    """Mean of the cells at ``positions`` (increasing) in float64, reading ``block`` cells at a time."""
    total = np.zeros(cells.dim, dtype=np.float64)
    for start in range(0, len(positions), block):
        total += cells.read(positions[start : start + block]).double().sum(0).cpu().numpy()
    return total / max(len(positions), 1)


def fit_method(
    name: str,
    source: Cells | np.ndarray,
    target: Cells | np.ndarray,
    *,
    config: W1Config | W2Config | ScGenConfig | None = None,
    seed: int = 0,
    progress: bool = False,
    effect: EffectTest | None = None,
    effect_alpha: float | None = None,
) -> FittedMethod:
    """Fit method ``name`` on source ``(n, k)`` and target ``(m, k)`` cells.

    Parameters
    ----------
    name
        One of :data:`METHODS`.
    source, target
        Control and perturbed cells in the feature space the method works in:
        :class:`~cellw1.ot.sampling.Cells` (streamed or in memory) or ``(n, k)`` arrays.
    config
        :class:`~cellw1.ot.config.W1Config` for ``"w1"``, :class:`~cellw1.ot.config.W2Config` for
        ``"w2"``, :class:`~cellw1.tl.scgen.ScGenConfig` for ``"scgen_vae"`` (defaults when
        ``None``); ignored by the other methods.
    seed
        Seed of every random choice.
    progress
        Show progress bars.
    effect, effect_alpha
        The perturbation's test for a response (:mod:`cellw1.ot.effect`) and its level: a method
        that moves cells predicts its input when ``effect`` is not detected at ``effect_alpha``
        (``info["gated"]``). ``None``: no gate (a W1 map then follows its config's ``effect_alpha``).
    """
    name = check_method(name, stacklevel=4)
    check_config(name, config)
    start = time.perf_counter()
    fitted: FittedMethod
    if name == "identity":
        fitted = Identity()
    elif name == "observed":
        fitted = Observed.fit(checked_cells(target, "target", torch.device("cpu")), seed)
    elif name == "mean_shift":
        cpu = torch.device("cpu")
        fitted = MeanShift.fit(checked_cells(source, "source", cpu), checked_cells(target, "target", cpu), seed)
    elif name == "scgen_vae":  # pertpy trains on all cells at once: read every row
        cpu = torch.device("cpu")
        cells = [
            torch.cat(list(checked_cells(x, what, cpu).blocks())).numpy()
            for x, what in ((source, "source"), (target, "target"))
        ]
        fitted = fit_scgen(cells[0], cells[1], cast("ScGenConfig | None", config), seed, progress=progress)
    elif name == "w1":
        if effect is not None:  # the perturbation's test, at its level, instead of the map's own
            config = (config if isinstance(config, W1Config) else W1Config()).replace(effect_alpha=effect_alpha)
        fitted = W1(fit_map(source, target, cast("W1Config | None", config), seed, progress=progress, effect=effect))
    else:
        fitted = W2(fit_w2(source, target, cast("W2Config | None", config), seed, progress=progress))
    if effect is not None and name in GATED and not effect.detected(effect_alpha):
        fitted.info["gated"] = True
    fitted.info["fit_seconds"] = time.perf_counter() - start
    return fitted


def load_method(tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> FittedMethod:
    """Rebuild a method from :meth:`FittedMethod.state_tensors` and :meth:`FittedMethod.header`."""
    name = header.get("name")
    if isinstance(name, str):
        name = ALIASES.get(name, name)  # models saved before the rename load quietly
    if name not in _CLASSES:
        raise ModelFileError(f"unknown method {name!r} in the model file; it may come from a newer cellw1.")
    return _CLASSES[name].from_state(tensors, header)
