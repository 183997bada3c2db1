"""SYNTHETIC combinations of perturbations: pairs that add up, pairs that do not, pairs with a null member.

Nothing here is measured. Counts are simulated as in :mod:`cellw1.datasets.conditions` (a
low-rank log mean with a continuous cell state ``s ~ U(0, 1)``, gamma-Poisson counts). Each
responding single perturbation ``i`` changes the log mean of its own program of genes by
``sign_i * amplitude_i * (0.5 + shape_i(s))`` (a state-dependent response, so that a mean
shift is not the whole answer); a *null* single changes nothing. A pair of perturbations is
one of four kinds (``uns["synthetic"]["kinds"]``):

``"additive"``
    the log fold changes of its members add up;
``"synergistic"``
    they add up, plus an interaction on a third program of genes that neither member
    touches alone;
``"epistatic"``
    one member masks the other: the pair is its masking member alone (buffering);
``"null_member"``
    a responding member with a null one: the pair is the responding member alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .conditions import CONTROL, _anndata, _counts, _simulate
from .synthetic import _check_count, _shape

if TYPE_CHECKING:
    import anndata

#: kinds of pairs, in the order they are drawn
PAIR_KINDS = ("additive", "synergistic", "epistatic", "null_member")
#: amplitude of a synergistic pair's interaction program
_INTERACTION = 1.2


def synthetic_combinations(
    n_control: int = 1000,
    n_per_condition: int = 300,
    n_singles: int = 8,
    n_null: int = 2,
    n_pairs_per_kind: int = 3,
    n_genes: int = 60,
    seed: int = 0,
) -> anndata.AnnData:
    """Simulate a SYNTHETIC experiment of single perturbations and pairs (raw counts); see the module docstring.

    Parameters
    ----------
    n_control, n_per_condition
        Cells of the control group and of every single or pair.
    n_singles, n_null
        Responding singles (``"p00"``, ...) and null singles after them (no response).
    n_pairs_per_kind
        Pairs of each kind (``"null_member"`` pairs: one responding and one null member).
    n_genes
        Genes.
    seed
        Seed of everything.

    Returns
    -------
    anndata.AnnData
        ``obs["condition"]`` (``"control"``, ``"p00"``, ``"p00+p03"``, ...) and ``obs["state"]``;
        ``uns["synthetic"]`` holds the truth: each pair's kind, the masking member of each
        epistatic pair, the null singles, the programs of the singles and the interaction
        programs of the synergistic pairs.
    """
    n_control, n_cells = _check_count(n_control, "n_control", 1), _check_count(n_per_condition, "n_per_condition", 1)
    k, k_null = _check_count(n_singles, "n_singles", 2), _check_count(n_null, "n_null", 1)
    per_kind = _check_count(n_pairs_per_kind, "n_pairs_per_kind", 1)
    g = _check_count(n_genes, "n_genes", 12)
    rng = np.random.default_rng(_check_count(seed, "seed", 0))
    responding = [f"p{i:02d}" for i in range(k)]
    null = [f"p{i:02d}" for i in range(k, k + k_null)]
    among = [(a, b) for i, a in enumerate(responding) for b in responding[i + 1 :]]
    if 3 * per_kind > len(among):
        raise ConfigError(
            f"{3 * per_kind} pairs of responding singles need more than n_singles={k}; raise n_singles or lower "
            "n_pairs_per_kind."
        )
    drawn = [among[i] for i in rng.permutation(len(among))[: 3 * per_kind]]
    kinds: dict[str, str] = {}
    for j, (a, b) in enumerate(drawn):
        kinds[f"{a}+{b}"] = PAIR_KINDS[j // per_kind]
    for j, i in enumerate(rng.choice(k, size=min(per_kind, k), replace=False)):
        a, b = sorted((responding[int(i)], null[j % k_null]))
        kinds[f"{a}+{b}"] = "null_member"
    program_size = max(2, g // 6)
    programs = {p: np.sort(rng.choice(g, size=program_size, replace=False)) for p in responding}
    signs = {p: 1.0 if i % 2 == 0 else -1.0 for i, p in enumerate(responding)}
    amplitudes = {p: float(rng.uniform(1.0, 1.6)) for p in responding}
    interactions = {
        pair: np.sort(rng.choice(g, size=program_size, replace=False))
        for pair, kind in kinds.items()
        if kind == "synergistic"
    }
    masking = {pair: pair.split("+")[int(rng.integers(2))] for pair, kind in kinds.items() if kind == "epistatic"}
    groups = [CONTROL, *responding, *null, *kinds]
    log_mean, state = _simulate(rng, [n_control] + [n_cells] * (len(groups) - 1), g)
    labels, start = [CONTROL] * n_control, n_control

    def single(p: str, rows: np.ndarray) -> None:
        if p in programs:
            i = responding.index(p)
            lfc = signs[p] * amplitudes[p] * (0.5 + _shape(i, state[rows]))
            log_mean[np.ix_(rows, programs[p])] += lfc[:, None]

    for group in groups[1:]:
        rows = np.arange(start, start + n_cells)
        kind = kinds.get(group)
        members = group.split("+")
        if kind == "epistatic":
            members = [masking[group]]
        for p in members:
            single(p, rows)
        if kind == "synergistic":
            log_mean[np.ix_(rows, interactions[group])] += (_INTERACTION * (0.5 + state[rows]))[:, None]
        labels += [group] * n_cells
        start += n_cells
    obs = {"condition": pd.Categorical(labels, categories=groups), "state": state.astype(np.float32)}
    uns = {
        "description": "SYNTHETIC single perturbations and pairs (cellw1.datasets.synthetic_combinations); "
        "not measured cells.",
        "kinds": kinds,
        "masking": masking,
        "null_members": null,
        "programs": {p: [f"g{i:04d}" for i in v] for p, v in programs.items()},
        "interaction_programs": {p: [f"g{i:04d}" for i in v] for p, v in interactions.items()},
    }
    return _anndata(_counts(rng, log_mean), obs, uns)


def synthetic_gene_targets(
    n_control: int = 1000, n_per_target: int = 300, n_targets: int = 12, n_genes: int = 60, seed: int = 0
) -> anndata.AnnData:
    """Simulate SYNTHETIC knock-outs of measured genes whose responses follow the genes' co-expression.

    The cells' log means have three latent factors (:mod:`cellw1.datasets.conditions`); a
    knock-out of gene ``j`` (targets ``"g0000"``, ...: genes of the data) lowers ``j`` by 2
    and moves the cell's latent factors by ``-1.5 (0.5 + s) l_j / |l_j|`` (``l_j`` the gene's
    loadings). So the genes that co-vary with a target in the controls say where its knock-out
    moves the cells, by construction: a best case for :func:`cellw1.gene_vectors`.

    Returns
    -------
    anndata.AnnData
        ``obs["condition"]`` (``"control"`` or the target gene) and ``obs["state"]``;
        ``uns["synthetic"]`` the description.
    """
    n_control, n_cells = _check_count(n_control, "n_control", 1), _check_count(n_per_target, "n_per_target", 1)
    g = _check_count(n_genes, "n_genes", 4)
    k = _check_count(n_targets, "n_targets", 1)
    if k > g:
        raise ConfigError(f"n_targets={k} must be at most n_genes={g} (targets are genes of the data).")
    rng = np.random.default_rng(_check_count(seed, "seed", 0))
    names = [f"g{i:04d}" for i in range(k)]
    found: list[np.ndarray] = []
    log_mean, state = _simulate(rng, [n_control] + [n_cells] * k, g, loadings_out=found)
    (loadings,) = found
    labels, start = [CONTROL] * n_control, n_control
    for j, name in enumerate(names):
        rows = np.arange(start, start + n_cells)
        direction = loadings[:, j] / max(float(np.linalg.norm(loadings[:, j])), 1e-12)
        log_mean[rows] -= 1.5 * (0.5 + state[rows])[:, None] * (direction @ loadings)[None, :]
        log_mean[rows, j] -= 2.0
        labels += [name] * n_cells
        start += n_cells
    obs = {"condition": pd.Categorical(labels, categories=[CONTROL, *names]), "state": state.astype(np.float32)}
    uns = {
        "description": "SYNTHETIC knock-outs that follow their genes' co-expression "
        "(cellw1.datasets.synthetic_gene_targets); not measured cells, a best case for gene vectors.",
    }
    return _anndata(_counts(rng, log_mean), obs, uns)
