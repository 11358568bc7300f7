"""betavae: train β-VAEs on image datasets, generate controlled synthetic images, compare models."""

__version__ = "0.1.0"
__all__ = ["TrainedModel", "load", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import betavae.data...` in worker processes does not pull in torch.
    if name in ("load", "TrainedModel"):
        from betavae import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'betavae' has no attribute {name!r}")
