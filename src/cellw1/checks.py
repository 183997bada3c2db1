"""Input checks and conversions shared by every layer: arrays in (numpy, torch, sparse), checked arrays out."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .errors import ConfigError, InputError

MIN_POINTS = 10
#: most cells of a group held out for validation (enough to rank states; more only costs time)
MAX_VALIDATION = 5_000


#: values checked for NaN and inf at once (bounds the temporary mask of a large matrix)
FINITE_BLOCK = 1 << 22


def as_array(
    x: Any,
    name: str,
    *,
    dtype: type | np.dtype | None = np.float64,
    min_rows: int = 1,
    sparse: bool = False,
    finite: bool = True,
    copy: bool = False,
    purpose: str = "",
) -> Any:
    """``x`` as a checked 2-D numeric array ``(n_cells, n_features)``: the one input check of cellw1.

    Accepts numpy arrays, nested lists, torch tensors and scipy sparse matrices. Bad input is an
    :class:`~cellw1.errors.InputError` naming ``name``, the problem and the fix.

    Parameters
    ----------
    dtype
        Convert to this dtype (``None``: keep the input's, a count matrix stays integer).
    min_rows
        Fewest rows (cells) accepted; every input needs at least one feature.
    sparse
        Keep a sparse matrix sparse (CSR or CSC; other formats become CSR); else densify it.
    finite
        Refuse NaN and inf, naming how many rows hold them.
    copy
        Never share memory with ``x``; otherwise the result may be ``x`` itself (never written to).
    purpose
        Completes the errors about too few cells and non-finite values, e.g. ``" to fit a map"``.
    """
    source = x  # what the result must not share memory with when ``copy``
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise InputError(f"{name} is complex; pass real numbers of shape (n_cells, n_features).")
        t = x.detach().cpu()
        if dtype is not None:
            t = t.to(torch.from_numpy(np.empty(0, dtype)).dtype)
        elif t.dtype == torch.bfloat16:  # no numpy equivalent
            t = t.float()
        shares = x.device.type == "cpu" and t.data_ptr() == x.detach().data_ptr()
        x = t.numpy()
        source = x if shares else None
    if sp.issparse(x):
        if sparse:
            x = x if x.format in ("csr", "csc") else x.tocsr()
            arr = x if dtype is None or x.dtype == dtype else x.astype(dtype)
        else:
            arr = x.toarray()
    elif hasattr(x, "obs") and hasattr(x, "var_names"):  # an AnnData, here where arrays of values go
        raise InputError(
            f"{name} is an AnnData; pass its values as an array: its .X, or model.preprocess(adata) for a "
            "model's scale (the scale of its predictions)."
        )
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists and other exotic inputs
            raise InputError(
                f"{name} could not be read as an array ({exc}); pass a numpy array, a torch tensor or a scipy "
                "sparse matrix."
            ) from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{name} has dtype {arr.dtype}; pass numeric values of shape (n_cells, n_features).")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"{name} is complex; pass real numbers of shape (n_cells, n_features).")
    if arr.ndim != 2:
        raise InputError(
            f"{name} must be 2-D (n_cells, n_features), got shape {arr.shape}; "
            "reshape it, e.g. x.reshape(-1, 1) for one feature."
        )
    if dtype is not None and not sp.issparse(arr):
        with np.errstate(over="ignore", invalid="ignore"):  # values beyond the dtype become inf: refused below
            arr = arr.astype(dtype, copy=False)
    n, d = arr.shape
    if n < min_rows:
        needed = "one cell" if min_rows == 1 else f"{min_rows} cells"
        found = f"is empty (shape {arr.shape})" if n == 0 else f"has {n} cells"
        raise InputError(f"{name} {found}; at least {needed} {'is' if min_rows == 1 else 'are'} needed{purpose}.")
    if d == 0:
        raise InputError(f"{name} has no features (shape {arr.shape}); pass at least one.")
    if finite:
        _check_finite(arr, name, purpose)
    if copy and (arr is source or np.may_share_memory(arr.data if sp.issparse(arr) else arr, _buffer(source))):
        arr = arr.copy()
    return arr


def _buffer(x: Any) -> Any:
    """Return what ``x``'s values live in, for :func:`numpy.may_share_memory`."""
    if sp.issparse(x):
        return x.data
    return x if isinstance(x, np.ndarray) else np.empty(0)


def _check_finite(arr: Any, name: str, purpose: str) -> None:
    """Raise naming the rows of ``arr`` (dense, CSR or CSC) that hold NaN or inf."""
    if not np.issubdtype(arr.dtype, np.floating):
        return
    if sp.issparse(arr):
        bad_entries = np.flatnonzero(~np.isfinite(arr.data))
        if arr.format == "csr":
            rows = np.unique(np.searchsorted(arr.indptr, bad_entries, side="right") - 1)
        else:
            rows = np.unique(arr.indices[bad_entries])
    else:
        step = max(1, FINITE_BLOCK // arr.shape[1])
        rows = np.concatenate(
            [
                start + np.flatnonzero(~np.isfinite(arr[start : start + step]).all(axis=1))
                for start in range(0, len(arr), step)
            ]
            or [np.empty(0, dtype=np.int64)]
        )
    if rows.size:
        raise InputError(
            f"{name} contains NaN or inf in {rows.size} rows (first: {rows[:5].tolist()}); "
            f"remove or impute those cells{purpose}."
        )


def as_points(x: Any, name: str, *, min_points: int = MIN_POINTS, purpose: str = " to fit a map") -> torch.Tensor:
    """Check ``x`` with :func:`as_array` and return a new float32 tensor of at least ``min_points`` rows.

    The tensor never shares memory with ``x``: it is what the solvers and the fitted maps
    compute on.
    """
    arr = as_array(x, name, dtype=np.float32, min_rows=min_points, copy=True, purpose=purpose)
    return torch.from_numpy(np.ascontiguousarray(arr))


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
    """Return the device ``device`` names (``None`` for ``"auto"``); an unknown name is a ConfigError.

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
        raise ConfigError(
            f"device {str(device)!r} requested but CUDA is not available here; use device='cpu' or 'auto'."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {str(device)!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s); "
            "use cuda:0 or 'auto'."
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"device {str(device)!r} requested but MPS is not available here; use device='cpu' or 'auto'."
        )
    return dev


def like_input(result: torch.Tensor, reference: Any) -> Any:
    """Return ``result`` as a tensor when ``reference`` was a tensor, else as a numpy array."""
    if isinstance(reference, torch.Tensor):
        return result.to(reference.device)
    return result.cpu().numpy()


def split_validation(
    n: int, fraction: float, generator: torch.Generator, *, min_val: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, validation) index split; no validation set when it would be tiny.

    At most :data:`MAX_VALIDATION` indices are held out.
    """
    perm = torch.randperm(n, generator=generator)
    n_val = min(int(round(n * fraction)), MAX_VALIDATION)
    if n_val < min_val or n - n_val < MIN_POINTS:
        return perm, perm[:0]
    return perm[n_val:], perm[:n_val]
