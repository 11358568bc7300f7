"""Datasets: built-in ground-truth generators and prepared image folders, all as :class:`ImageData`."""
from __future__ import annotations

import numpy as np

from betavae.data.base import ImageData, fingerprint_array, split_indices
from betavae.data.sprites import GENERATORS

__all__ = ["ImageData", "build_data", "build_generator"]


def build_generator(name: str, image_size: int):
    """The built-in ground-truth generator called ``name`` (``dsprites``, ``shapes-rgb``)."""
    if name not in GENERATORS:
        raise ValueError(f"unknown built-in dataset {name!r}; valid: {', '.join(GENERATORS)}")
    return GENERATORS[name](image_size=image_size)


def build_data(cfg) -> ImageData:
    """The images a :class:`~betavae.config.DataConfig` describes, with their train/val split."""
    if cfg.name == "prepared":
        return _prepared(cfg)
    generator = build_generator(cfg.name, cfg.image_size)
    factors = generator.sample_factors(cfg.num_images, np.random.default_rng(cfg.seed))
    images = generator.render(factors)
    train, val = split_indices(len(images), cfg.val_fraction, cfg.seed)
    return ImageData(
        images=images,
        train_indices=train,
        val_indices=val,
        fingerprint=fingerprint_array(images, cfg.name, cfg.seed),
        factors=factors,
        factor_names=generator.factor_names,
        source=generator,
        info={"name": cfg.name, **generator.describe(), "num_images": cfg.num_images, "seed": cfg.seed},
    )


def _prepared(cfg) -> ImageData:
    from betavae.data.prepared import load_prepared

    data = load_prepared(cfg.path)
    if data.image_size != cfg.image_size:
        raise ValueError(
            f"{cfg.path} holds {data.image_size}×{data.image_size} images but data.image_size is "
            f"{cfg.image_size}; set data.image_size={data.image_size} or prepare again with --size {cfg.image_size}"
        )
    return data
