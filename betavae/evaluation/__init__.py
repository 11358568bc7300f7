"""Evaluation of trained runs: ``betavae evaluate`` (metrics and figures into ``RUN/eval/``) and
``betavae traverse`` (latent manipulation of one image)."""
from betavae.evaluation.run_eval import EvalOptions, evaluate_run
from betavae.evaluation.traverse import write_traversal

__all__ = ["EvalOptions", "evaluate_run", "write_traversal"]
