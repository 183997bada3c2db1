"""What a fit is asked to do, validated once: :class:`FitSpec` (one map) and :class:`ConditionalSpec`.

:func:`cellw1.fit`, :func:`cellw1.fit_all` and :func:`cellw1.fit_conditional` turn their
keywords into one of these frozen objects; every check of a setting happens here, when it is
made, and the pipeline (:mod:`cellw1.tl.pipeline`) reads the object. Checks that need the data
(labels present, enough cells) happen when the data are read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..checks import check_seed
from ..errors import ConfigError, InputError
from ..files.model_files import tensor_checksum
from ..ot.config import ConditionalConfig, W1Config, W2Config
from ..ot.effect import EffectTest, check_effect_alpha
from ..pp.embedding import Embedding, EmbeddingConfig
from ..pp.labels import label_text
from ..pp.preprocessing import Assumption, Preprocessor
from ..pp.spaces import check_space
from .methods import CONFIGS, check_config, check_method
from .scgen import ScGenConfig

#: fewest cells a group may have (the solver also holds a validation share out)
MIN_CELLS = 20
#: default level of the test for a response (:mod:`cellw1.ot.effect`), the same for every method
EFFECT_ALPHA = 0.05

Space = Literal["genes", "pca", "autoencoder"]


def check_buffer_cells(buffer_cells: Any) -> int | None:
    """``buffer_cells`` as an int >= 1, or ``None`` (the default of the source); else a ConfigError."""
    if buffer_cells is None:
        return None
    if isinstance(buffer_cells, bool) or not isinstance(buffer_cells, int | np.integer) or buffer_cells < 1:
        raise ConfigError(f"buffer_cells={buffer_cells!r} must be an integer >= 1 (cells of each group held at once).")
    return int(buffer_cells)


@dataclass(frozen=True, kw_only=True)
class PipelineSpec:
    """Settings every fit shares: where the cells are read, how they are normalised and embedded.

    Attributes
    ----------
    condition_key, control
        Column of ``obs`` with each cell's condition, and the control label (kept as text,
        :func:`~cellw1.pp.labels.label_text`).
    layer, obsm_key
        Read ``layers[layer]`` instead of ``X``, or fit on ``obsm[obsm_key]`` as it is.
    space, embedding_config, embedding
        Where the method is fitted, the embedding's settings, or an embedding fitted before.
    input_kind
        ``"counts"``, ``"log"``, ``"continuous"`` or ``"auto"`` (:mod:`cellw1.pp.preprocessing`).
    seed, progress, buffer_cells
        Seed of every random choice, progress bars, cells of each group held at once.
    warn_missing
        Warn about cells without a label (:func:`cellw1.fit_all` warns once, not once per fit).
    """

    condition_key: str
    control: str
    layer: str | None = None
    obsm_key: str | None = None
    space: Space = "genes"
    embedding_config: EmbeddingConfig | None = None
    embedding: Embedding | None = None
    input_kind: Assumption = "auto"
    seed: int = 0
    progress: bool = True
    buffer_cells: int | None = None
    warn_missing: bool = True

    def __post_init__(self) -> None:
        """Check every setting; store the normalised ones (labels as text, seed as int)."""
        check_space(self.space)
        object.__setattr__(self, "seed", check_seed(self.seed))
        object.__setattr__(self, "control", label_text(self.control))
        object.__setattr__(self, "buffer_cells", check_buffer_cells(self.buffer_cells))

    def replace(self, **changes: Any) -> Any:
        """Return a copy with ``changes``, validated again."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class FitSpec(PipelineSpec):
    """One control -> perturbation fit (:func:`cellw1.fit`); the fields are its keywords.

    Attributes
    ----------
    perturbation
        The perturbation label (text); ``None`` for settings shared by several fits
        (:func:`cellw1.fit_all` gives each fit its label with :meth:`for_perturbation`).
    method, config
        The method (a deprecated alias is replaced by its name) and its config.
    effect_alpha
        Level of the perturbation's test for a response; ``None``: no test.
    effect
        That test already made on the same cells and seed (e.g. by an evaluation that fits
        several methods): every method that moves cells follows it instead of testing again.
    preprocessor
        A normalisation fitted before, used instead of fitting one (with ``embedding``, the
        space a screen shares: :func:`cellw1.fit_all` with ``shared_space=True``).
    """

    perturbation: str | None = None
    method: str = "w1"
    config: W1Config | W2Config | ScGenConfig | None = None
    effect_alpha: float | None = EFFECT_ALPHA
    effect: EffectTest | None = None
    preprocessor: Preprocessor | None = None

    def __post_init__(self) -> None:
        """Check the method, its config and the test for a response as well."""
        super().__post_init__()
        object.__setattr__(self, "method", check_method(self.method, stacklevel=4))
        check_config(self.method, self.config)
        check_effect_alpha(self.effect_alpha)
        if self.effect is not None and not isinstance(self.effect, EffectTest):
            raise ConfigError(f"effect must be an EffectTest (cellw1.ot.effect), got {type(self.effect).__name__}.")
        if self.preprocessor is not None:
            if not isinstance(self.preprocessor, Preprocessor):
                raise ConfigError(
                    f"preprocessor must be a cellw1.pp.preprocessing.Preprocessor (e.g. other_model.preprocessor), "
                    f"got {type(self.preprocessor).__name__}."
                )
            if self.obsm_key is not None:
                raise ConfigError("an obsm embedding is used as it is: drop preprocessor= (or obsm_key=).")
        if self.perturbation is not None:
            perturbation = label_text(self.perturbation)
            if perturbation == self.control:
                raise InputError(f"control and perturbation are both {perturbation!r}; pick two different conditions.")
            object.__setattr__(self, "perturbation", perturbation)

    def for_perturbation(self, perturbation: str, **changes: Any) -> FitSpec:
        """Return these settings for one perturbation (and ``changes``)."""
        return dataclasses.replace(self, perturbation=perturbation, **changes)

    def settings(self) -> dict[str, Any]:
        """Describe how the models are fitted, as JSON (a collection's index keeps it).

        Everything that changes a model but the perturbation.
        """
        expected = CONFIGS.get(self.method)
        embedding: dict[str, Any] | None = None
        if self.embedding is not None:  # an embedding fitted beforehand: its kind and a checksum of its weights
            embedding = {"kind": self.embedding.kind, "sha256": tensor_checksum(self.embedding.state_tensors())}
        elif self.space != "genes":
            embedding = {"kind": self.space, "config": (self.embedding_config or EmbeddingConfig()).to_dict()}
        # the level of the test for a response, only where it is not the default (indexes written before it match)
        gate: dict[str, Any] = {} if self.effect_alpha == EFFECT_ALPHA else {"effect_alpha": self.effect_alpha}
        if self.preprocessor is not None:  # a shared normalisation, only where given (older indexes match)
            gate["preprocessor"] = self.preprocessor.to_dict()
        return {
            "condition_key": self.condition_key,
            "control": self.control,
            "method": self.method,
            "space": self.space,
            "layer": self.layer,
            "obsm_key": self.obsm_key,
            "input_kind": self.input_kind,
            "seed": self.seed,
            "config": None if expected is None else (self.config or expected()).to_dict(),
            "embedding": embedding,
            **gate,
        }


@dataclass(frozen=True, kw_only=True)
class ConditionalSpec(PipelineSpec):
    """One conditional fit (:func:`cellw1.fit_conditional`); the fields are its keywords.

    ``config`` is a :class:`~cellw1.ot.conditional.ConditionalConfig` (a plain ``W1Config`` is
    converted); ``perturbations`` a tuple of text labels or ``None`` (every label but the control).
    With ``obsm_key`` the model is fitted on ``obsm[obsm_key]`` as it is, as a single map is
    (no normalisation, no calibration).
    """

    space: Space = "pca"
    perturbations: tuple[str, ...] | None = None
    dose_key: str | None = None
    embedding_key: str | None = None
    config: ConditionalConfig = dataclasses.field(default_factory=ConditionalConfig)

    def __post_init__(self) -> None:
        """Check the settings; convert a ``W1Config`` and the labels given."""
        super().__post_init__()
        if self.embedding is not None:
            raise ConfigError(
                "a conditional model fits its own embedding; drop embedding= (space= picks it, or give obsm_key= "
                "to fit on an embedding stored in obsm)."
            )
        config: Any = self.config
        if config is None:
            config = ConditionalConfig()
        elif type(config) is W1Config:
            config = ConditionalConfig.from_w1(config)
        elif not isinstance(config, ConditionalConfig):
            raise ConfigError(f"config must be a ConditionalConfig (or W1Config), got {type(config).__name__}.")
        object.__setattr__(self, "config", config)
        given: Any = self.perturbations
        if given is not None:
            given = [given] if isinstance(given, str) else given
            object.__setattr__(self, "perturbations", tuple(dict.fromkeys(label_text(p) for p in given)))
