"""betavae: train β-VAEs on image datasets, generate controlled synthetic images, compare models."""

__version__ = "0.1.0"

from betavae.inference import TrainedModel, load  # noqa: E402

__all__ = ["TrainedModel", "load", "__version__"]
