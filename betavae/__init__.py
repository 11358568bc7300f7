"""betavae: train β-VAEs on image datasets, generate controlled synthetic images, compare models."""

# The one place the version is defined: pyproject.toml reads it (dynamic version), `betavae --version`,
# run.json, eval/metrics.json and exports record it.
__version__ = "0.1.0"
__all__ = ["TrainedModel", "from_pretrained", "load", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import betavae.data...` in worker processes does not pull in torch.
    if name in ("load", "TrainedModel"):
        from betavae import inference

        return getattr(inference, name)
    if name == "from_pretrained":
        from betavae.export import from_pretrained

        return from_pretrained
    raise AttributeError(f"module 'betavae' has no attribute {name!r}")
