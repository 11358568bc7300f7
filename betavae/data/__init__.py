"""Datasets: built-in ground-truth generators, dataset files and prepared image folders, all as :class:`ImageData`."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from betavae.data.base import ImageData, fingerprint_array, split_indices
from betavae.data.sprites import GENERATORS
from betavae.data.standard import FILE_DATASETS, FileImages

__all__ = ["DATA_SOURCES", "DataSource", "ImageData", "build_data", "build_generator"]


@dataclass(frozen=True)
class DataSource:
    """What a ``data.name`` is: ``kind`` (generator, file, prepared) and what ``data.path`` must
    name (None: no path)."""

    kind: str
    path: str | None = None


# Every ``data.name``, in the order the config lists them; DataConfig's choices derive from this registry.
DATA_SOURCES: dict[str, DataSource] = {
    **{name: DataSource("generator") for name in GENERATORS},
    **{name: DataSource("file", f"the {reader.kind} file (e.g. {reader.default_file})")
       for name, reader in FILE_DATASETS.items()},
    "prepared": DataSource("prepared", "a folder written by `betavae prepare`"),
}


def build_generator(name: str, image_size: int, factors: dict[str, list[int]] | None = None):
    """The built-in ground-truth generator called ``name`` (``dsprites``, ``shapes-rgb``), limited
    to the given value indices of some ``factors`` (default: the full grid)."""
    if name not in GENERATORS:
        raise ValueError(f"unknown built-in dataset {name!r}; valid: {', '.join(GENERATORS)}")
    return GENERATORS[name](factor_values=factors, image_size=image_size)


def build_data(cfg) -> ImageData:
    """The images a :class:`~betavae.config.DataConfig` describes, with their train/val split."""
    if cfg.name == "prepared":
        return _prepared(cfg)
    if cfg.name in FILE_DATASETS:
        return _from_file(cfg)
    generator = build_generator(cfg.name, cfg.image_size, cfg.factors)
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


def _from_file(cfg) -> ImageData:
    """A dataset file: ``num_images`` of its images (a seeded choice without replacement; all when the
    file has no more), read from disk on demand; ``source`` renders any other point of its grid."""
    source = FILE_DATASETS[cfg.name](cfg.path, image_size=cfg.image_size)
    total = len(source)
    if cfg.num_images >= total:
        rows = np.arange(total, dtype=np.int64)
    else:
        rows = np.sort(np.random.default_rng(cfg.seed).choice(total, cfg.num_images, replace=False))
    images = FileImages(source, rows)
    train, val = split_indices(len(rows), cfg.val_fraction, cfg.seed)
    return ImageData(
        images=images,
        train_indices=train,
        val_indices=val,
        fingerprint=_file_fingerprint(cfg, source, rows),
        factors=source.index_to_factors(rows),
        factor_names=source.factor_names,
        source=source,
        info={"name": cfg.name, **source.describe(), "num_images": len(rows), "seed": cfg.seed},
    )


def _file_fingerprint(cfg, source, rows: np.ndarray) -> str:
    """Identifies the images without reading them all: the file's name, size, grid and factor values,
    the chosen rows, the image size, and the bytes of a few of its images."""
    digest = hashlib.blake2b(digest_size=16)
    store = source.store
    digest.update(repr((cfg.name, store.path.name, store.path.stat().st_size, source.full_factor_sizes(),
                        cfg.image_size)).encode())
    for values in store.values:
        digest.update(np.ascontiguousarray(values, dtype=np.float64).data)
    digest.update(np.ascontiguousarray(rows).data)
    probe = np.unique(np.linspace(0, len(store) - 1, 16).astype(np.int64))
    digest.update(np.ascontiguousarray(store.read(probe)).data)
    return digest.hexdigest()


def _prepared(cfg) -> ImageData:
    from betavae.data.prepared import load_prepared

    data = load_prepared(cfg.path)
    if data.image_size != cfg.image_size:
        raise ValueError(
            f"{cfg.path} holds {data.image_size}×{data.image_size} images but data.image_size is "
            f"{cfg.image_size}; set data.image_size={data.image_size} or prepare again with --size {cfg.image_size}"
        )
    return data
