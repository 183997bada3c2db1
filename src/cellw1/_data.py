"""Input checks and conversions shared by the solver (numpy or torch in, float tensors out)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import ConfigError, InputError

MIN_POINTS = 10
#: most cells of a group held out for validation (enough to rank states; more only costs time)
MAX_VALIDATION = 5_000


def as_points(x: Any, name: str, *, min_points: int = MIN_POINTS, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Check ``x`` is a finite ``(n, d)`` array with ``n >= min_points``; return a new tensor.

    The result never shares memory with ``x``, so the caller's data cannot be modified.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu", dtype).clone()
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise InputError(f"{name} could not be read as an array ({exc}); pass a numpy array or a torch tensor.") from exc
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise InputError(f"{name} has dtype {arr.dtype}; pass numeric values (a float array of shape (n_cells, n_features)).")
        t = torch.tensor(arr, dtype=dtype)
    if t.ndim != 2:
        raise InputError(
            f"{name} must be 2-D (n_points, n_features), got shape {tuple(t.shape)}; "
            "reshape it, e.g. x.reshape(-1, 1) for one feature."
        )
    if t.shape[0] < min_points:
        raise InputError(f"{name} has {t.shape[0]} points; at least {min_points} are needed to fit a map.")
    if t.shape[1] < 1:
        raise InputError(f"{name} has no features (shape {tuple(t.shape)}).")
    bad = ~torch.isfinite(t)
    if bad.any():
        rows = torch.nonzero(bad.any(1)).flatten()[:5].tolist()
        raise InputError(
            f"{name} contains NaN or inf in {int(bad.any(1).sum())} rows (first: {rows}); "
            "remove or impute those rows before fitting."
        )
    return t


def check_pair(source_dim: int, target_dim: int) -> None:
    """Source and target must live in the same feature space (given their numbers of features)."""
    if source_dim != target_dim:
        raise InputError(
            f"source has {source_dim} features but target has {target_dim}; "
            "both must be measured on the same features in the same order."
        )


#: largest seed accepted (numpy and torch both take it)
MAX_SEED = 2**63 - 1


def check_seed(seed: Any) -> int:
    """``seed`` as a Python int; a bool, a float, a string or a negative number is a ConfigError."""
    if isinstance(seed, bool | np.bool_) or not isinstance(seed, int | np.integer) or not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"seed={seed!r} must be a non-negative integer (e.g. seed=0).")
    return int(seed)


def parse_device(device: str | torch.device) -> torch.device | None:
    """The device ``device`` names (``None`` for ``"auto"``); an unknown name is a ConfigError.

    Only the name is checked here; :func:`resolve_device` also checks that the device exists.
    """
    if str(device) == "auto":
        return None
    if not isinstance(device, str | torch.device):
        raise ConfigError(f"device={device!r} must be a string such as 'cpu', 'cuda', 'cuda:1' or 'auto'.")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(f"unknown device {str(device)!r}; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.") from exc
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {str(device)!r} is not supported; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    return dev


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when present else CPU; a device that is not here is a clear error."""
    dev = parse_device(device)
    if dev is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} requested but CUDA is not available here; use device='cpu' or 'auto'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {str(device)!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s); "
            "use cuda:0 or 'auto'."
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(device)!r} requested but MPS is not available here; use device='cpu' or 'auto'.")
    return dev


def like_input(result: torch.Tensor, reference: Any) -> Any:
    """Return ``result`` as a tensor when ``reference`` was a tensor, else as a numpy array."""
    if isinstance(reference, torch.Tensor):
        return result.to(reference.device)
    return result.cpu().numpy()


def split_validation(n: int, fraction: float, generator: torch.Generator, *, min_val: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, validation) index split; no validation set when it would be tiny.

    At most :data:`MAX_VALIDATION` indices are held out.
    """
    perm = torch.randperm(n, generator=generator)
    n_val = min(int(round(n * fraction)), MAX_VALIDATION)
    if n_val < min_val or n - n_val < MIN_POINTS:
        return perm, perm[:0]
    return perm[n_val:], perm[:n_val]
