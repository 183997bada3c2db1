"""The W2 baseline's solver and fitted map.

:func:`fit_w2` trains two ICNNs (:mod:`cellw1.ot.icnn`) and returns a :class:`W2Map`, the
Brenier map ``T(x) = m + s * grad g((x - m) / s)``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from ..checks import check_pair, check_seed, like_input, resolve_device
from ..errors import ConfigError, InputError, ModelFileError
from ..files.model_files import check_format, tensors_under
from .config import W2Config
from .energy import energy_distance, mean_distance
from .fitted import FittedMap
from .icnn import ICNN, build_icnn, f_step, g_step, standardization
from .potential import CHUNK, evaluate, gradient
from .sampling import checked_cells, minibatches
from .training import History, Training, fit_threads, read_history

logger = logging.getLogger(__name__)

FORMAT = "cellw1.W2Map"
#: 2: quadratic skip term and standardisation (version-1 files load as the plain network)
FORMAT_VERSION = 2
#: validation cells per side used to select the best state (energy distance is O(n^2))
VAL_LIMIT = 1000


class W2Map(FittedMap):
    """A fitted W2 (Brenier) transport map ``T(x) = m + s * grad g((x - m) / s)``.

    ``g`` is an :class:`ICNN` on standardised coordinates ``z = (x - m) / s``
    (:func:`standardization`; ``m = 0, s = 1`` when the config turns it off).

    Parameters
    ----------
    f, g
        The target-side potential ``f`` and the source-side potential ``g`` (approximately
        ``f*``), both on standardised coordinates; the map is ``grad g`` there.
    config
        The configuration it was fitted with.
    info
        Fit diagnostics: ``seconds``, ``iterations``, ``ms_per_step``, ``best_step`` (0: the
        initial state), ``val_energy`` (energy distance of the selected state, in the units of
        the data), ``initial_val_energy``, ``g_min_weight``, ``quadratic_weight``...
    history
        Training history (:mod:`cellw1.ot.training`), one entry per validation evaluation:
        ``step``, ``g_loss`` and ``f_loss`` (mean losses since the previous evaluation),
        ``val_energy`` (in the units of the data), and ``best_step``, ``stopped_at``.
    shift, scale
        The standardisation ``m: (d,)`` (zeros when ``None``) and ``s > 0``.

    Notes
    -----
    Methods accept a numpy array or a torch tensor ``x: (n, d)`` and return the same kind,
    working in chunks of ``batch_size`` rows.
    """

    FORMAT = FORMAT
    FORMAT_VERSION = FORMAT_VERSION

    def __init__(
        self,
        f: ICNN,
        g: ICNN,
        config: W2Config,
        info: dict[str, Any] | None = None,
        *,
        shift: torch.Tensor | None = None,
        scale: float = 1.0,
        history: History | None = None,
    ) -> None:
        self.f = f.requires_grad_(False).eval()
        self.g = g.requires_grad_(False).eval()
        super().__init__(config, info, history)
        device = g.skip.weight.device
        if shift is None:
            shift = torch.zeros(g.dim)
        self.shift = shift.detach().to(device, torch.float32).clone()
        if self.shift.shape != (g.dim,):
            raise InputError(f"shift has shape {tuple(self.shift.shape)} but the networks take {g.dim} features.")
        if not (math.isfinite(scale) and scale > 0):
            raise InputError(f"scale={scale!r} must be a positive number.")
        self.scale = float(scale)

    @property
    def dim(self) -> int:
        """Number of features ``d``."""
        return self.g.dim

    @property
    def device(self) -> torch.device:
        """Device holding the networks."""
        return self.g.skip.weight.device

    def to(self, device: str | torch.device) -> W2Map:
        """Move the networks to ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``); returns self."""
        dev = resolve_device(device)
        self.f.to(dev)
        self.g.to(dev)
        self.shift = self.shift.to(dev)
        return self

    def __repr__(self) -> str:
        return f"W2Map(dim={self.dim}, hidden={self.config.hidden}, device={self.device})"

    def transport(self, x: Any, *, batch_size: int = CHUNK) -> Any:
        """Transported points ``T(x) = m + s * grad g((x - m) / s)``; returns ``(n, d)``."""
        z = (self._points(x) - self.shift) / self.scale
        return like_input(gradient(self.g, z, batch_size).mul_(self.scale).add_(self.shift), x)

    def potential(self, x: Any, *, batch_size: int = CHUNK) -> Any:
        """The convex potential ``s^2 g((x - m) / s) + <m, x>``, whose gradient is the map; ``(n,)``."""
        t = self._points(x)
        values = evaluate(self.g, (t - self.shift) / self.scale, batch_size) * self.scale**2 + t @ self.shift
        return like_input(values, x)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """All weights, prefixed ``f.`` and ``g.``, and the standardisation (``standardizer.``)."""
        tensors = {f"f.{k}": v for k, v in self.f.state_dict().items()}
        tensors.update({f"g.{k}": v for k, v in self.g.state_dict().items()})
        tensors["standardizer.shift"] = self.shift
        tensors["standardizer.scale"] = torch.tensor([self.scale], dtype=torch.float64)
        return tensors

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any], *, source: str = "model") -> W2Map:
        """Rebuild a map from :meth:`state_tensors` and :meth:`header` output.

        Version-1 files (before the quadratic term and the standardisation) load as the plain
        network in raw coordinates, which is what they hold. Files from before ``history`` was
        a field of its own kept it in ``info["history"]``.
        """
        version = check_format(header, FORMAT, FORMAT_VERSION, source=source, oldest=1)
        try:
            config = W2Config.from_dict(header["config"])
            if version == 1:
                config = config.replace(standardize=False, quadratic=False)
                shift, scale = None, 1.0
            else:
                shift, scale = tensors["standardizer.shift"], float(tensors["standardizer.scale"].reshape(()))
            f, g = build_icnn(int(header["dim"]), config), build_icnn(int(header["dim"]), config)
            f.load_state_dict(tensors_under(tensors, "f."))
            g.load_state_dict(tensors_under(tensors, "g."))
            info, history = read_history(header)
            return cls(f, g, config, info, shift=shift, scale=scale, history=history)
        except (KeyError, RuntimeError, ValueError, TypeError, ConfigError, InputError) as exc:
            raise ModelFileError(f"{source} does not match its own description ({exc}); save the model again.") from exc


def build_optimizer(net: ICNN, config: W2Config) -> torch.optim.Adam:
    """Adam over ``net``'s parameters with ``config.lr`` and ``config.betas``.

    The weight ``a`` of the quadratic term, if any, is in its own group at
    ``config.lr * config.quadratic_lr_scale``.
    """
    others = [p for name, p in net.named_parameters() if name != "quadratic_weight"]
    groups: list[dict[str, Any]] = [{"params": others}]
    if net.quadratic_weight is not None:
        groups.append({"params": [net.quadratic_weight], "lr": config.lr * config.quadratic_lr_scale})
    return torch.optim.Adam(groups, lr=config.lr, betas=config.betas, foreach=True)


def fit_w2(
    source: Any,
    target: Any,
    config: W2Config | None = None,
    seed: int = 0,
    *,
    progress: bool = False,
) -> W2Map:
    """Fit the W2 (Brenier) map from ``source`` cells to ``target`` cells with two ICNNs.

    The cells are standardised with :func:`standardization` of the training cells (unless
    ``config.standardize`` is off). Each outer step takes ``config.n_inner`` :func:`g_step` s
    (a fresh source minibatch each) and one :func:`f_step` (fresh source and target
    minibatches). At the start and every ``eval_every`` steps the held-out source cells are
    transported and compared with the held-out target cells by energy distance; the best
    state (possibly the initial one) is kept in memory and returned
    (:class:`~cellw1.ot.training.Training`), and the training history is ``W2Map.history``.

    Parameters
    ----------
    source, target
        ``(n, d)`` and ``(m, d)`` numpy arrays or torch tensors (never modified), or
        :class:`~cellw1.ot.sampling.Cells` (minibatches from streamed buffers; the
        standardisation is then taken from the first buffer of each side).
    config
        Solver configuration; :class:`W2Config` (600 outer steps; ``W2Config.paper()``: the paper's 100,000) when ``None``.
    seed
        Seed of initialisation, split and minibatches: the same seed gives identical results
        on the CPU.
    progress
        Show a progress bar.

    Returns
    -------
    W2Map
    """
    config = config or W2Config()
    with fit_threads(config.cpu_threads, resolve_device(config.device)):
        return _fit_w2(source, target, config, seed, progress)


def _fit_w2(source: Any, target: Any, config: W2Config, seed: int, progress: bool) -> W2Map:
    """:func:`fit_w2` with the thread policy applied."""
    device = resolve_device(config.device)
    src, tgt = checked_cells(source, "source", device), checked_cells(target, "target", device)
    check_pair(src.dim, tgt.dim)
    seed = check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_src, val_s = src.split(config.val_fraction, generator)
    train_tgt, val_t = tgt.split(config.val_fraction, generator)
    if len(val_s) == 0 or len(val_t) == 0:
        val_s, val_t = train_src.buffer(), train_tgt.buffer()
    if config.standardize:
        shift, scale = standardization(train_src.buffer(), train_tgt.buffer())
    else:
        shift, scale = val_s.new_zeros(src.dim), 1.0

    def standard(x: torch.Tensor) -> torch.Tensor:  # cells are standardised as they are drawn
        return (x - shift) / scale

    x_val, y_val = standard(val_s[:VAL_LIMIT]), standard(val_t[:VAL_LIMIT])
    yy = float(mean_distance(y_val))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        f, g = build_icnn(src.dim, config).to(device), build_icnn(src.dim, config).to(device)
    f_opt, g_opt = build_optimizer(f, config), build_optimizer(g, config)

    n_iters, n_inner = config.n_iters, config.n_inner
    inner_batches = minibatches(train_src, config.batch_size, n_iters * n_inner, generator)
    source_batches = minibatches(train_src, config.batch_size, n_iters, generator)
    target_batches = minibatches(train_tgt, config.batch_size, n_iters, generator)
    training = Training((f, g), score="val_energy", mode="min", name="W2 training")
    # energies are measured in standardised units and reported in the units of the data
    initial = energy_distance(gradient(g, x_val), y_val, yy) * scale
    training.consider(0, initial)
    g_sum, f_sum, count = x_val.new_zeros(()), x_val.new_zeros(()), 0
    bar = tqdm(range(1, n_iters + 1), desc="W2 (ICNN)", disable=not progress, leave=False)
    step = 0
    start = time.perf_counter()
    for step in bar:
        for _ in range(n_inner):
            g_sum += g_step(f, g, g_opt, standard(next(inner_batches)[0]), config.penalty)
        f_sum += f_step(f, g, f_opt, standard(next(source_batches)[0]), standard(next(target_batches)[0]))
        count += 1
        if step % config.eval_every == 0 or step == n_iters:
            energy = energy_distance(gradient(g, x_val), y_val, yy) * scale
            training.evaluate(step, energy, g_loss=float(g_sum) / (count * n_inner), f_loss=float(f_sum) / count)
            g_sum, f_sum, count = g_sum.zero_(), f_sum.zero_(), 0
            bar.set_postfix(val_energy=f"{energy:.4f}")
            if training.stop:
                break
    seconds = time.perf_counter() - start
    history = training.finish(step)
    info = {
        "seed": seed,
        "n_source": src.n_cells,
        "n_target": tgt.n_cells,
        "iterations": step,
        "inner_iterations": step * n_inner,
        "seconds": seconds,
        "ms_per_step": 1000.0 * seconds / max(step, 1),
        "best_step": training.best_step,
        "val_energy": training.best_score,
        "initial_val_energy": initial,
        "g_min_weight": g.min_weight(),
        "quadratic_weight": None
        if f.quadratic_weight is None or g.quadratic_weight is None  # both or neither (one config)
        else {
            "f": float(f.quadratic_weight.detach()),
            "g": float(g.quadratic_weight.detach()),
        },
        "scale": scale,
    }
    logger.info(
        "fitted W2 map in %.2f s (best validation energy %.4g at step %d; initial %.4g)",
        seconds,
        training.best_score,
        training.best_step,
        initial,
    )
    return W2Map(f, g, config, info, shift=shift, scale=scale, history=history)
