"""The headline of an evaluation: the typed numbers of ``eval/metrics.json`` that every view reads.

:data:`SCORES` gathers the scores each evaluation stage declares (reconstruction's
``IMAGE_METRICS``, sample quality, the latent ranking, ``FACTOR_METRICS``); :class:`Headline` is the
model built from it. ``evaluate`` writes one, and the run page, the study's live table, tables
and findings read it with :func:`read_headline`, so an unknown or renamed key is an error, not a
blank cell.
"""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError, create_model

from betavae.evaluation.disentanglement import factor_scores
from betavae.evaluation.reconstruction import image_scores
from betavae.evaluation.scores import LATENT_SCORES, SAMPLE_QUALITY_SCORES, Score
from betavae.runs import RunPaths
from betavae.strict import StrictModel

SCORES: dict[str, Score] = {score.key: score for score in
                            (*image_scores(), *SAMPLE_QUALITY_SCORES, *LATENT_SCORES, *factor_scores())}


class HeadlineError(ValueError):
    """A metrics.json whose headline does not fit :class:`Headline` (written by another version)."""


class _HeadlineBase(StrictModel):
    def value(self, key: str) -> float | None:
        """The value of score ``key`` (None when not computed); an unregistered key is an error."""
        if key not in SCORES:
            raise KeyError(f"no score {key!r}; the scores: {', '.join(SCORES)}")
        return getattr(self, key)

    def computed(self) -> dict[str, float]:
        """The scores that have a value, in registry order."""
        return self.model_dump(exclude_none=True)


Headline = create_model(
    "Headline", __base__=_HeadlineBase, __doc__="Every :data:`SCORES` entry of one evaluation (None: not computed).",
    **{key: (int | None if score.integer else float | None, None) for key, score in SCORES.items()},
)


def read_headline(run_dir: str | Path) -> _HeadlineBase | None:
    """The headline of a run's last evaluation, or None when it has not been evaluated."""
    path = RunPaths(Path(run_dir)).eval_metrics
    if not path.is_file():
        return None
    return headline_of(json.loads(path.read_text()), path)


def headline_of(metrics: dict, source: str | Path = "metrics.json") -> _HeadlineBase:
    """The typed headline of a ``metrics.json`` mapping; :class:`HeadlineError` when it does not fit."""
    try:
        return Headline.model_validate(metrics["headline"])
    except (KeyError, TypeError, ValidationError) as exc:
        raise HeadlineError(f"{source} has no valid headline ({str(exc).splitlines()[0]}); "
                            "evaluate the run again with this version of betavae") from None
