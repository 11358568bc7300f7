"""Typed, validated run configuration: YAML file + ``--set a.b=c`` overrides → :class:`RunConfig`.

Errors (unknown key, wrong type, impossible shape) are raised as :class:`ConfigError` before any
training starts, with the valid choices listed.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from betavae.data import DATA_SOURCES, build_generator
from betavae.model import PRESETS as MODEL_PRESETS
from betavae.objectives import OBJECTIVES
from betavae.strict import StrictModel


class ConfigError(ValueError):
    """A configuration that cannot be run; the message says what is valid."""


class DataConfig(StrictModel):
    """Where the images come from and how they are presented to the model."""

    name: Literal[tuple(DATA_SOURCES)] = "dsprites"  # type: ignore[valid-type]
    path: str | None = Field(None, description="prepared: folder written by `betavae prepare`; "
                             "dsprites-file, shapes3d-file, mpi3d-file: the dataset file")
    num_images: int = Field(50_000, gt=0, description="built-in data: images sampled from the factor grid; "
                            "dataset files: a seeded choice of the file's images (all when it has no more)")
    image_size: int = Field(64, gt=0, description="built-in data: rendered size; dataset files: resized to it; "
                            "prepared data: checked")
    normalization: Literal["unit", "symmetric", "imagenet"] = "unit"
    val_fraction: float = Field(0.25, gt=0, lt=1, description="built-in data and dataset files; prepared data fixes its own split")
    hflip: bool = Field(False, description="random horizontal flip of training batches")
    seed: int = Field(0, ge=0, description="seed of the image sample and of the train/val split")
    factors: dict[str, list[int]] | None = Field(
        None, description="built-in data: keep only these value indices of some factors, e.g. "
        "{shape: [0], orientation: [0]} (the others keep all their values)")

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        needs = DATA_SOURCES[self.name].path
        if needs and not self.path:
            raise ValueError(f"data.path is required when data.name is {self.name!r}: {needs}")
        if self.factors is not None:
            if DATA_SOURCES[self.name].kind != "generator":
                raise ValueError(f"data.factors restricts built-in data only, not data.name {self.name!r}")
            try:
                restricted = build_generator(self.name, 16, self.factors)
            except (KeyError, ValueError) as error:
                raise ValueError(f"data.factors: {error.args[0]}") from None
            if len(restricted) == 1:
                raise ValueError("data.factors leaves every factor at one value: the data would be a single image")
        return self


class ModelConfig(StrictModel):
    """The convolutional encoder/decoder; ``preset`` fills any field not given."""

    preset: Literal[tuple(MODEL_PRESETS)] | None = None  # type: ignore[valid-type]
    channels: list[int] = Field(default_factory=lambda: [32, 32, 64, 64])
    latent_dim: int = Field(10, gt=0)
    batch_norm: bool = True
    hidden: int = Field(0, ge=0, description="units of a fully connected layer between the convolutions and "
                        "the code, in the encoder and the decoder (0: none; disentanglement_lib uses 256)")
    output_activation: Literal["auto", "sigmoid", "tanh", "identity"] = Field(
        "auto", description="auto: matched to data.normalization (sigmoid scaled to its range)"
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("preset"):
            preset = values["preset"]
            if preset not in MODEL_PRESETS:
                return values  # the Literal check reports it
            values = {**MODEL_PRESETS[preset], **values}
        return values

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ValueError("model.channels must be a non-empty list of positive integers")
        return self


ObjectiveSettings = Annotated[
    Union[tuple(objective.Settings for objective in OBJECTIVES.values())],  # type: ignore[misc]
    Field(discriminator="name"),
]


class TrainConfig(StrictModel):
    """The training loop: budget, optimiser, schedule, precision, logging and checkpoints."""

    max_steps: int | None = Field(None, gt=0, description="total optimiser steps (wins over epochs)")
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(64, gt=1)
    lr: float = Field(5e-4, gt=0)
    lr_decay: float = Field(1.0, gt=0, le=1, description="ExponentialLR factor per epoch (study: 0.95)")
    lr_warmup_steps: int = Field(0, ge=0, description="steps over which the learning rate rises linearly to lr (0: none)")
    weight_decay: float = Field(0.0, ge=0)
    seed: int = Field(1265, ge=0)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA and bf16-capable CPUs, else fp32; fp16 (CUDA) uses a GradScaler"
    )
    channels_last: bool = Field(True, description="NHWC memory layout: same results, 1.2–1.35× faster on CPU")
    compile: bool = False
    val_every: int | None = Field(None, gt=0, description="steps between validations (default: each epoch)")
    val_max_images: int | None = Field(2048, gt=0, description="cap on validation images per evaluation")
    checkpoint_every: int = Field(500, gt=0, description="steps between checkpoints")
    factor_metrics_every: int | None = Field(
        None, gt=0, description="steps between disentanglement checks (MIG, SAP, DCI, BetaVAE, FactorVAE) while "
        "training, logged to RUN/metrics/factor_metrics.csv; needs data with ground-truth factors (null: off)")
    factor_metrics_points: int = Field(2000, ge=20, le=50_000, description="points of each check (half as many test points; "
                                       "BetaVAE/FactorVAE at most 1,000)")
    divergence_factor: float | None = Field(
        100.0, gt=1, description="stop when the loss exceeds this many times its running median (null: only NaN/inf)"
    )
    progress: bool = True
    trackers: list[Literal["csv", "tensorboard", "mlflow"]] = Field(
        default_factory=lambda: ["csv"],
        description="where metrics go: csv (RUN/metrics, always on), tensorboard (RUN/tensorboard), "
        "mlflow (pip install 'betavae[mlflow]'; ./mlruns unless a tracking URI is set)",
    )
    tracker_experiment: str | None = Field(None, description="MLflow experiment (default: the config's name; "
                                           "a study sets its own name)")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow store (default: MLFLOW_TRACKING_URI, "
                                            "else ./mlruns, a local file store)")

    @field_validator("trackers")
    @classmethod
    def _csv_always(cls, trackers: list[str]) -> list[str]:
        return list(dict.fromkeys(["csv", *trackers]))  # csv always, each tracker once, order kept


class RunConfig(StrictModel):
    """Everything a run needs; saved resolved as ``config.yaml`` in the run folder."""

    name: str = "run"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: ObjectiveSettings = Field(default_factory=OBJECTIVES["beta"].Settings)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_objective(cls, values: Any) -> Any:
        objective = values.get("objective") if isinstance(values, dict) else None
        if isinstance(objective, dict) and "name" not in objective:
            values = {**values, "objective": {"name": "beta", **objective}}
        return values

    @model_validator(mode="after")
    def _check_shapes(self) -> "RunConfig":
        size, depth = self.data.image_size, len(self.model.channels)
        if size % (2**depth) != 0:
            reachable = sorted({s for s in (16, 32, 64, 128, 256, 512) if s % (2**depth) == 0})
            raise ValueError(
                f"data.image_size {size} cannot be reached by {depth} stride-2 blocks "
                f"(model.channels {self.model.channels}); sizes this channel list supports: {reachable}"
            )
        if self.objective.reconstruction == "bernoulli" and self.data.normalization != "unit":
            raise ValueError("reconstruction 'bernoulli' needs data.normalization 'unit' (targets in [0, 1])")
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def read_yaml(path: Path) -> Any:
    """A YAML file's contents; unreadable or malformed YAML is a :class:`ConfigError` naming the file."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (UTF-8) file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"objective.beta=4"`` → (["objective", "beta"], 4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"override {text!r}: the key {key.strip()!r} has an empty part")
    try:
        return path, yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML: {_yaml_problem(exc)}") from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Returns a copy of ``raw`` with each ``a.b=c`` override set (intermediate dicts created)."""
    result = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {key!r} is not a section")
        node[path[-1]] = value
    return result


def _describe(error: dict) -> str:
    loc = error["loc"]
    if len(loc) > 2 and loc[0] == "objective" and loc[1] in OBJECTIVES:
        loc = (loc[0], *loc[2:])  # drop the discriminated-union tag pydantic puts in the location
    location = ".".join(str(part) for part in loc if not str(part).startswith("function-"))
    if error["type"] == "extra_forbidden":
        section = _section_for(error["loc"][:-1])
        valid = ", ".join(sorted(section.model_fields)) if section else "see the config reference"
        return f"unknown key {location!r}; valid keys here: {valid}"
    return f"{location or 'config'}: {error['msg']}"


def _section_for(location: tuple) -> type[BaseModel] | None:
    node: type[BaseModel] = RunConfig
    for part in location:
        if part in OBJECTIVES:
            continue  # discriminated-union tag in the error location
        field = node.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            node = annotation
        else:
            return {"objective": _objective_for(location)}.get(str(part))
    return node


def _objective_for(location: tuple) -> type[BaseModel] | None:
    return next((OBJECTIVES[p].Settings for p in location if p in OBJECTIVES), None)


def validate_config(raw: dict) -> RunConfig:
    """Validates a plain dict into a :class:`RunConfig`, raising :class:`ConfigError` with every problem."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(lines)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Reads a YAML config (or starts from defaults), applies overrides and validates."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        raw = read_yaml(path) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of sections (data, model, objective, train)")
        raw.setdefault("name", path.stem)
    return validate_config(apply_overrides(raw, overrides or []))
