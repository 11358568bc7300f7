"""Ground-truth data: images rendered from known factors of variation (disentanglement_lib's interface).

A :class:`GroundTruthData` has named factors, each taking ``factor_sizes[k]`` values; every
image of the full grid has an index (the last factor varies fastest, as in dSprites).
``restrict`` gives the same generator on any subset of factor values.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np


class GroundTruthData(ABC):
    """Factor names and sizes, seeded factor sampling, deterministic rendering, index ↔ factors."""

    factor_names: tuple[str, ...]
    image_size: int
    channels: int

    def __init__(self, factor_values: dict[str, Sequence[int]] | None = None):
        """``factor_values`` restricts a factor to some of its value indices (default: all)."""
        full = self.full_factor_sizes()
        self._allowed = [np.arange(size) for size in full]
        for name, values in (factor_values or {}).items():
            k = self.factor_index(name)
            values = np.asarray(sorted(set(int(v) for v in values)))
            if values.size == 0 or values.min() < 0 or values.max() >= full[k]:
                raise ValueError(f"values for factor {name!r} must lie in 0..{full[k] - 1}")
            self._allowed[k] = values

    @abstractmethod
    def full_factor_sizes(self) -> tuple[int, ...]:
        """Number of values of each factor in the unrestricted grid."""

    @abstractmethod
    def factor_values(self, name: str) -> np.ndarray:
        """The physical value of each index of a factor (e.g. scale 0.5 … 1.0)."""

    @abstractmethod
    def render(self, factors: np.ndarray) -> np.ndarray:
        """Integer factors ``(N, F)`` (value indices of the full grid) → uint8 images ``(N, H, W, C)``."""

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self._allowed)

    @property
    def num_factors(self) -> int:
        return len(self.factor_names)

    def __len__(self) -> int:
        return int(np.prod(self.factor_sizes, dtype=np.int64))

    def factor_index(self, name: str) -> int:
        if name not in self.factor_names:
            raise KeyError(f"unknown factor {name!r}; factors: {', '.join(self.factor_names)}")
        return self.factor_names.index(name)

    def restrict(self, **factor_values: Sequence[int]) -> "GroundTruthData":
        """The same generator limited to the given value indices of some factors."""
        current = {n: a for n, a in zip(self.factor_names, self._allowed)}
        return type(self)(factor_values={**current, **factor_values}, **self._options())

    def _options(self) -> dict:
        return {}

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` factor vectors drawn uniformly from the (restricted) grid, as full-grid value indices."""
        columns = [allowed[rng.integers(0, len(allowed), size=n)] for allowed in self._allowed]
        return np.stack(columns, axis=1).astype(np.int64)

    def index_to_factors(self, index: np.ndarray | int) -> np.ndarray:
        """Grid index (last factor fastest) → factor value indices ``(N, F)``."""
        position = np.unravel_index(np.asarray(index, dtype=np.int64), self.factor_sizes)
        return np.stack([allowed[p] for allowed, p in zip(self._allowed, position)], axis=-1)

    def factors_to_index(self, factors: np.ndarray) -> np.ndarray:
        """Factor value indices ``(N, F)`` → grid index."""
        factors = np.atleast_2d(np.asarray(factors, dtype=np.int64))
        position = []
        for k, allowed in enumerate(self._allowed):
            where = np.searchsorted(allowed, factors[:, k])
            if np.any(where >= len(allowed)) or np.any(allowed[np.minimum(where, len(allowed) - 1)] != factors[:, k]):
                raise ValueError(f"factor {self.factor_names[k]!r} has values outside this dataset")
            position.append(where)
        return np.ravel_multi_index(position, self.factor_sizes)

    def describe(self) -> dict:
        return {"factor_names": list(self.factor_names), "factor_sizes": list(self.factor_sizes)}
