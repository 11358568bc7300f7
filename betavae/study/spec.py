"""Study files: a base config, named datasets, a grid over config keys, extra cells → validated cells.

A study file (YAML) looks like::

    name: paper
    base: {objective: {name: beta, reconstruction: mse_mean, kld_weight: 0.0025}}
    datasets:
      celeba: {config: ../configs/paper-celeba.yaml, article: celeba}
      batik: {config: ../configs/paper-batik.yaml, article: batik, set: {data.path: data/batik}}
    grid: {objective.beta: [10, 100]}
    extra:
      - {dataset: batik, set: {objective.beta: 1, objective.kld_weight: 0.000001}}
    evaluate: {fid: true, fid_samples: 2400, kid: true}
    resources: {cpus: 1, gpus: 0}
    starts: {starts: 3, steps: 500, min_separation: 0.6}   # optional, as `train --starts`

Every dataset × every grid combination is one cell; ``extra`` adds single cells. A cell's config is
the base, then the dataset's config file, then its ``set`` overrides, then the cell's grid values
(or the extra cell's ``set``) — each cell validated like ``betavae train --config`` would. With
``starts``, every cell is chosen among short starts from its seed on (:mod:`betavae.starts`), so
the seeds of one setting must lie at least ``starts`` apart.
"""
from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from betavae.config import ConfigError, RunConfig, apply_overrides, validate_config
from betavae.evaluation.run_eval import EvalOptions
from betavae.starts import StartsPolicy
from betavae.strict import StrictModel

ARTICLE_DATASETS = ("cars", "celeba", "cats", "batik")
# Short names of common grid keys in cell names; other keys use their last component.
_SHORT_KEYS = {"objective.beta": "beta", "objective.kld_weight": "kldw", "model.latent_dim": "z",
               "objective.name": "", "data.name": ""}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    """One dataset of the study: a run config file and/or overrides, and the article's row it matches."""

    config: str | None = Field(None, description="run config YAML, relative to the study file")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted config keys → values")
    article: Literal["cars", "celeba", "cats", "batik"] | None = Field(
        None, description="the article's dataset this one reproduces (its numbers are shown beside ours)")
    label: str | None = Field(None, description="name shown in the report (default: the key)")
    images: str | None = Field(None, description="folder of outside images for this dataset's PSNR/SSIM "
                               "(the article's evaluation photos; wins over evaluate.images)")


class ExtraCell(_Strict):
    """A cell outside the grid (the article's batik KLD-weight runs)."""

    dataset: str
    set: dict[str, Any] = Field(min_length=1)


# A study's ``evaluate:`` section holds :class:`EvalOptions` fields, with these defaults of its own;
# the device and progress bars are set per cell (:meth:`_EvaluateBase.options`).
STUDY_EVALUATE_DEFAULTS = {"kid": True, "disentanglement_points": 5000, "dci_points": 2000}
_PER_CELL = ("device", "progress")


def _study_field(name: str, info: FieldInfo) -> FieldInfo:
    """An :class:`EvalOptions` field (its constraints kept) with the study's default, if it has one."""
    info = copy.copy(info)
    info.default = STUDY_EVALUATE_DEFAULTS.get(name, info.default)
    return info


class _EvaluateBase(StrictModel):
    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, raw: Any) -> Any:
        unknown = sorted(set(raw) - set(cls.model_fields)) if isinstance(raw, dict) else []
        if unknown:
            per_cell = f" ({' and '.join(_PER_CELL)} are set per cell)" if set(unknown) & set(_PER_CELL) else ""
            raise ValueError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
                             f"{per_cell}; the evaluate options: {', '.join(cls.model_fields)}")
        return raw

    def options(self, device: str) -> EvalOptions:
        """The :class:`EvalOptions` of one cell (no progress bars: the study shows its own table;
        KID only with FID)."""
        return EvalOptions(**{**self.model_dump(), "kid": self.kid and self.fid}, device=device, progress=False)


EvaluateSpec = create_model(
    "EvaluateSpec", __base__=_EvaluateBase,
    __doc__="What ``betavae evaluate`` computes for every cell: :class:`EvalOptions` without device and "
            "progress, with :data:`STUDY_EVALUATE_DEFAULTS`.",
    **{name: (info.annotation, _study_field(name, info)) for name, info in EvalOptions.model_fields.items()
       if name not in _PER_CELL},
)


class ResourcesSpec(_Strict):
    """What one cell asks of the Ray cluster."""

    cpus: float = Field(1.0, gt=0, description="CPU cores per cell (also its torch threads)")
    gpus: float = Field(0.0, ge=0, description="GPUs per cell (0: CPU training)")


class StartsSpec(_Strict):
    """Every cell chosen among short starts, as ``betavae train --starts`` chooses (1: just train)."""

    starts: int = Field(1, ge=1, description="starts per cell: its seed, seed + 1, …")
    steps: int = Field(StartsPolicy.steps, ge=1, description="training steps after which a start is judged")
    min_separation: float = Field(StartsPolicy.min_separation, ge=0, le=1,
                                  description="traversal separation that keeps a start")

    def policy(self) -> StartsPolicy:
        return StartsPolicy(self.starts, self.steps, self.min_separation)


class StudySpec(_Strict):
    """A whole study file, validated."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict, description="config shared by every cell")
    datasets: dict[str, DatasetSpec] = Field(min_length=1)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    extra: list[ExtraCell] = Field(default_factory=list)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    starts: StartsSpec = Field(default_factory=StartsSpec)

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid axis {key!r} has no values")
            if len({repr(v) for v in values}) != len(values):
                raise ValueError(f"grid axis {key!r} repeats a value: {values}")
        return grid

    @model_validator(mode="after")
    def _known_datasets(self) -> "StudySpec":
        for cell in self.extra:
            if cell.dataset not in self.datasets:
                raise ValueError(f"extra cell names dataset {cell.dataset!r}; the study's datasets: "
                                 f"{', '.join(self.datasets)}")
        return self


@dataclass(frozen=True, kw_only=True)
class CellIdentity:
    """What names a study cell wherever it appears: the spec's :class:`Cell`, its ``study.json``
    entry (:meth:`identity`, then its state) and the report's
    :class:`~betavae.study.findings.CellResult` (read back with :meth:`identity_of`)."""

    name: str
    dataset: str
    values: dict[str, Any]  # the grid values (or an extra cell's settings) that make it a cell
    group: Literal["grid", "extra"] = "grid"
    article: str | None = None  # the article's dataset it reproduces
    label: str = ""  # the dataset's name in the report

    def describe(self) -> str:
        """The cell's varied values, e.g. ``β=10`` or ``β=1, kld_weight=1e-06``."""
        return ", ".join(f"{display_key(k)}={_format(v)}" for k, v in self.values.items()) or "base"

    @property
    def shown_label(self) -> str:
        return self.label or self.dataset

    def identity(self) -> dict[str, Any]:
        """The identity as a ``study.json`` entry holds it."""
        return {f.name: getattr(self, f.name) for f in fields(CellIdentity)}

    @staticmethod
    def identity_of(entry: dict[str, Any]) -> dict[str, Any]:
        """The identity fields of a ``study.json`` entry (the ones it has)."""
        return {f.name: entry[f.name] for f in fields(CellIdentity) if f.name in entry}


@dataclass(frozen=True, kw_only=True)
class Cell(CellIdentity):
    """One training + evaluation of a study: its identity, its validated config and outside images."""

    config: RunConfig = field(compare=False)
    images: str | None = None  # outside images for PSNR/SSIM, if any


def load_study(path: str | Path) -> tuple[StudySpec, list[Cell]]:
    """Reads and validates a study file and expands it into cells (every cell's config validated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {path} does not exist")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping (name, datasets, grid, ...)")
    raw.setdefault("name", path.stem)
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  - ".join(f"{'.'.join(map(str, e['loc'])) or 'study'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid study file {path}:\n  - {problems}") from None
    return spec, expand(spec, path.parent)


def expand(spec: StudySpec, root: Path = Path(".")) -> list[Cell]:
    """Every dataset × grid combination, then the extra cells; config files resolve against ``root``."""
    keys = list(spec.grid)
    cells = []
    for dataset in spec.datasets:
        for combination in itertools.product(*(spec.grid[k] for k in keys)):
            cells.append(_cell(spec, root, dataset, "grid", dict(zip(keys, combination))))
    cells += [_cell(spec, root, extra.dataset, "extra", dict(extra.set)) for extra in spec.extra]
    names = [c.name for c in cells]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"the study has two cells with the same settings: {', '.join(repeated)}")
    _check_starts(cells, spec.starts.starts)
    return cells


def _check_starts(cells: list[Cell], starts: int) -> None:
    """With several starts every cell needs a step budget, and two cells of one setting whose starts
    share a seed could end as the same model (a cell tries its seed, …, seed + starts − 1): refused."""
    if starts < 2:
        return
    unbounded = [c.name for c in cells if c.config.train.max_steps is None]
    if unbounded:
        raise ConfigError(f"starts: {starts} needs train.max_steps in every cell (starts and the full run are "
                          f"counted in steps); without it: {', '.join(unbounded)}")
    settings: dict[str, list[Cell]] = {}
    for cell in cells:
        raw = cell.config.to_dict()
        raw.pop("name", None)
        raw["train"].pop("seed")
        settings.setdefault(yaml.safe_dump(raw, sort_keys=True), []).append(cell)
    for group in settings.values():
        group.sort(key=lambda c: c.config.train.seed)
        for low, high in itertools.pairwise(group):
            if high.config.train.seed - low.config.train.seed < starts:
                raise ConfigError(
                    f"cells {low.name} and {high.name} differ only in their seed ({low.config.train.seed}, "
                    f"{high.config.train.seed}), and with starts: {starts} each tries {starts} seeds from its own "
                    f"on, so they could train the same model; space the seeds at least {starts} apart")


def _cell(spec: StudySpec, root: Path, dataset: str, group: str, values: dict[str, Any]) -> Cell:
    name = cell_name(dataset, values)
    source = spec.datasets[dataset]
    raw = _merge(spec.base, _read_config(root, source.config) if source.config else {})
    raw = apply_overrides(raw, [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                                for k, v in {**source.set, **values}.items()])
    raw["name"] = name
    try:
        config = validate_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"cell {name!r}: {exc}") from None
    images = source.images or (str(spec.evaluate.images) if spec.evaluate.images else None)
    return Cell(name=name, dataset=dataset, group=group, values=values, config=config, article=source.article,
                label=source.label or dataset, images=images)


def _read_config(root: Path, relative: str) -> dict:
    path = root / relative
    if not path.is_file():
        raise ConfigError(f"dataset config {relative} not found (looked for {path})")
    return yaml.safe_load(path.read_text()) or {}


def _merge(base: dict, over: dict) -> dict:
    """Nested dict merge: ``over`` wins, sections merge key by key."""
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def cell_name(dataset: str, values: dict[str, Any]) -> str:
    """A folder-safe cell name: ``celeba_beta10``, ``batik_beta1_kldw1e-06``."""
    parts = [dataset] + [f"{_SHORT_KEYS.get(k, k.rsplit('.', 1)[-1])}{_format(v)}" for k, v in values.items()]
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", "_".join(parts))


def display_key(key: str) -> str:
    """How a config key is shown in tables and cell descriptions: ``β`` or its last component."""
    return {"objective.beta": "β", "objective.name": "objective"}.get(key, key.rsplit(".", 1)[-1])


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
