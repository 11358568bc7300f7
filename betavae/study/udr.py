"""UDR of a study's models: each setting's seeds compared with one another (:mod:`betavae.metrics.udr`).

For every setting (a cell's values without ``train.seed``) with two or more finished seeds, each
model encodes the same :data:`UDR_IMAGES` validation images of the setting's data (seeded draw,
:data:`UDR_SEED`, from the first seed's data: every seed of a setting has the same data config);
its encoder means are the codes, its stored latent ranking (``RUN/latents.json``: mean KL per
dimension) says which dimensions are active (mean KL > ``ACTIVE_KL_NATS``). A setting with one
seed gets no UDR and a reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.stats

from betavae.evaluation.scores import Score
from betavae.latents import ACTIVE_KL_NATS
from betavae.metrics.udr import udr
from betavae.study.findings import CellResult, by_setting

UDR_IMAGES = 1000
UDR_SEED = 0
UDR_SIMILARITY = "spearman"
UDR_SCORE = Score("udr", "UDR", "unsupervised disentanglement ranking (Duan et al. 2020): median over the "
                  "setting's other seeds of the pair score", better=1)
MIN_CORRELATION_MODELS = 3
ONE_SEED = "needs ≥ 2 finished seeds of its setting"


@dataclass
class StudyUDR:
    """Every model's UDR (by cell name), and why a setting has none (by setting name)."""

    scores: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    details: dict[str, dict] = field(default_factory=dict)  # per setting: cells, pairwise, active dims

    def value(self, name: str) -> float | None:
        return self.scores.get(name)


def study_udr(results: list[CellResult], images: int = UDR_IMAGES, method: str = UDR_SIMILARITY) -> StudyUDR:
    """UDR of every finished model whose setting has at least two finished seeds."""
    found = StudyUDR()
    for setting in by_setting(results):
        if setting.state != "finished":
            continue
        cells = [c for c in setting.members if c.finished and c.run is not None]
        if len(cells) < 2:
            found.reasons[setting.name] = ONE_SEED
            continue
        try:
            codes, kl = _codes(cells, images)
        except Exception as exc:  # noqa: BLE001 - a model that cannot be read leaves its setting without UDR
            found.reasons[setting.name] = f"could not encode the seeds' images ({type(exc).__name__}: {exc})"
            continue
        result = udr(codes, kl, method=method, kl_threshold=ACTIVE_KL_NATS)
        found.scores.update({c.name: s for c, s in zip(cells, result["model_scores"])})
        found.details[setting.name] = {"cells": [c.name for c in cells], **result, "images": len(codes[0])}
    return found


def _codes(cells: list[CellResult], images: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each model's encoder means of the same validation images and its mean KL per dimension."""
    from betavae.inference import load
    from betavae.latents import latent_ranking

    first = load(cells[0].run)
    batch = first.images(first.validation_sample(images, seed=UDR_SEED))
    codes, kl = [], []
    for cell in cells:
        trained = first if cell is cells[0] else load(cell.run)
        codes.append(trained.encode(batch).mean.numpy())
        kl.append(latent_ranking(trained).kl)
    return codes, kl


def udr_correlations(results: list[CellResult], found: StudyUDR, scores: list[Score]) -> list[tuple[Score, int, float | None, str]]:
    """Per supervised score: the models that have it and a UDR, and the Spearman rank correlation
    between the two over them (None with the reason when fewer than :data:`MIN_CORRELATION_MODELS`
    or either side is constant)."""
    rows = []
    for score in scores:
        pairs = [(u, v) for r in results if r.finished and (u := found.value(r.name)) is not None
                 and (v := r.value(score.key)) is not None]
        if len(pairs) < MIN_CORRELATION_MODELS:
            rows.append((score, len(pairs), None, f"needs ≥ {MIN_CORRELATION_MODELS} models with both"))
            continue
        udrs, values = map(np.asarray, zip(*pairs))
        if np.ptp(udrs) == 0 or np.ptp(values) == 0:
            rows.append((score, len(pairs), None, "constant over the models"))
            continue
        rows.append((score, len(pairs), float(scipy.stats.spearmanr(udrs, values).statistic), ""))
    return rows
