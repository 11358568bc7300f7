"""The article's findings (docs/study.md §8) checked on a study's finished cells.

Every check names the measurable proxy it uses. β is compared only within a dataset, among grid
cells that differ in nothing but ``objective.beta``; a dataset with a single β is skipped. The
article's specific claims (CelebA best, batik worst, β = 100 lowers FID for cars, cats and batik)
are checked on the datasets that reproduce them; without such datasets the claim's general form is.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from betavae.config import ConfigError, RunConfig
from betavae.evaluation.disentanglement import factor_scores
from betavae.evaluation.headline import SCORES, Headline, HeadlineError, headline_of
from betavae.evaluation.reconstruction import IMAGE_METRICS
from betavae.evaluation.scores import Score
from betavae.latents import ACTIVE_KL_NATS
from betavae.runs import RunPaths, read_config, read_csv
from betavae.study.spec import CellIdentity, cell_name

BETA = "objective.beta"
SEED = "train.seed"  # a grid over it repeats each setting with other seeds (aggregated: SettingResult)
HOLDS, FAILS, PARTLY, UNCHECKED = "holds", "does not hold", "partly", "not checked"
FACTOR_SCORES: tuple[Score, ...] = tuple(factor_scores())
# The scores ranked across cells ("best on every metric", "worst dataset"): the article's, i.e. every
# per-image metric on the validation images and FID (KID, which the article does not report, is not).
RANKED: tuple[Score, ...] = tuple(score for score in (*(SCORES[f"{name}_val"] for name in IMAGE_METRICS),
                                                      SCORES["fid"]) if score.better)
_VAL_KEYS = ("recon", "kl")  # read from the last validation row


@dataclass(frozen=True, kw_only=True)
class CellResult(CellIdentity):
    """One study cell as the report sees it: its identity and state (``study.json``), config, typed
    headline, reconstruction summaries (mean ± std per image set) and last validation row."""

    state: str = "finished"
    error: str | None = None
    run: Path | None = None
    config: RunConfig | None = None
    headline: Headline | None = None  # eval/metrics.json's headline (None: not evaluated by this version)
    reconstruction: dict | None = None  # eval/metrics.json's reconstruction summaries
    final_val: dict | None = None  # last row of metrics/val.csv

    @classmethod
    def read(cls, study_root: Path, entry: dict) -> "CellResult":
        """A cell of ``study.json`` with what its run folder holds (a finished cell's evaluation and
        last validation row; a config or evaluation written by another version is left out)."""
        paths = RunPaths(study_root / entry["run"])
        finished = entry.get("state") == "finished"
        metrics = json.loads(paths.eval_metrics.read_text()) if finished and paths.eval_metrics.is_file() else {}
        try:
            headline = headline_of(metrics, paths.eval_metrics) if metrics else None
        except HeadlineError:
            headline = None
        validation = read_csv(paths.val_log) if finished else []
        return cls(
            **{"values": {}, **CellIdentity.identity_of(entry)}, state=entry.get("state", "pending"),
            error=entry.get("error"), run=paths.root, config=_config(paths), headline=headline,
            reconstruction=metrics.get("reconstruction") if headline else None,
            final_val=validation[-1] if validation else None,
        )

    @property
    def finished(self) -> bool:
        return self.state == "finished" and self.headline is not None

    def value(self, key: str) -> float | None:
        """A number of the cell: a headline score (:data:`SCORES`, e.g. ``ssim_val``, ``fid``, ``mig``) or
        ``recon``/``kl`` of the final validation row; None when missing, KeyError for an unknown key."""
        if key in _VAL_KEYS:
            return (self.final_val or {}).get(key)
        if key not in SCORES:
            raise KeyError(f"no cell value {key!r}; the values: {', '.join((*_VAL_KEYS, *SCORES))}")
        return self.headline.value(key) if self.headline is not None else None


def setting_values(values: dict) -> dict:
    """A cell's values without :data:`SEED`: what names its setting."""
    return {k: v for k, v in values.items() if k != SEED}


def has_seeds(results: list[CellResult]) -> bool:
    """True when the study sweeps :data:`SEED` (some cell names its seed)."""
    return any(SEED in r.values for r in results)


@dataclass(frozen=True, kw_only=True)
class SettingResult(CellResult):
    """The cells of one setting (same dataset, group and values but the seed) as one result: its
    :meth:`value` is the median over the seeds that have it. Identity, config and headline (so that
    ``finished`` holds) come from its first finished seed."""

    members: tuple[CellResult, ...] = ()

    def value(self, key: str) -> float | None:
        found = [v for c in self.members if c.finished and (v := c.value(key)) is not None]
        return float(np.median(found)) if found else None

    def values_of(self, key: str) -> list[tuple[object, float]]:
        """(seed, value) of every finished seed that has ``key``."""
        return [(c.values.get(SEED), v) for c in self.members if c.finished and (v := c.value(key)) is not None]

    @property
    def seeds(self) -> list:
        """The seeds of the finished cells of the setting."""
        return [c.values.get(SEED) for c in self.members if c.finished]


def by_setting(results: list[CellResult]) -> list[SettingResult]:
    """The cells grouped by setting (values without :data:`SEED`), in the order settings first appear."""
    groups: dict[tuple, list[CellResult]] = {}
    for r in results:
        groups.setdefault((r.dataset, r.group, repr(sorted(setting_values(r.values).items()))), []).append(r)
    settings = []
    for cells in groups.values():
        first = next((c for c in cells if c.finished), cells[0])
        values = setting_values(first.values)
        state = "finished" if any(c.finished for c in cells) else first.state
        settings.append(SettingResult(
            name=cell_name(first.dataset, values), dataset=first.dataset, values=values, group=first.group,
            article=first.article, label=first.label, state=state, error=first.error, run=first.run,
            config=first.config, headline=first.headline, reconstruction=first.reconstruction,
            final_val=first.final_val, members=tuple(cells)))
    return settings


def _config(paths: RunPaths) -> RunConfig | None:
    try:
        return read_config(paths.root) if paths.config.is_file() else None
    except ConfigError:  # written by another version of betavae: show the cell without its config
        return None


@dataclass
class Finding:
    """One finding of the article and what our cells say about it."""

    key: str
    finding: str  # as the article states it
    proxy: str  # what we measured instead
    verdict: str  # holds | does not hold | partly | not checked
    evidence: str
    detail: list[str] = field(default_factory=list)


def check_findings(results: list[CellResult], grid_keys: list[str]) -> list[Finding]:
    """Every finding of the article (docs/study.md §8) checked on the finished cells, in order.

    When the study sweeps :data:`SEED`, each setting's seeds count as one result whose every number
    is the median over its seeds (:class:`SettingResult`), and each proxy says so."""
    seeds = has_seeds(results)
    if seeds:
        results = by_setting(results)
        grid_keys = [k for k in grid_keys if k != SEED]
    findings = [smaller_beta_lower_reconstruction(results), smaller_beta_higher_kl(results),
                larger_beta_fewer_active_dims(results), larger_beta_lower_ssim(results), celeba_best(results),
                batik_worst(results), disentangle_poorly(results), larger_beta_lower_fid(results),
                architecture_hurts_batik(results, grid_keys)]
    if seeds:
        for finding in findings:
            finding.proxy += f"; {MEDIANS}"
    return findings


MEDIANS = "per-setting medians over seeds"


def tally(k: int, n: int) -> str:
    """The verdict of a claim that held in ``k`` of ``n`` comparisons (n > 0)."""
    return HOLDS if k == n else FAILS if k == 0 else PARTLY


def smaller_beta_lower_reconstruction(results: list[CellResult]) -> Finding:
    return _trend_finding("beta_recon", "Smaller β gives a lower reconstruction loss",
                          "final validation reconstruction loss (metrics/val.csv, last row) rises with β",
                          results, [BETA], "recon", +1)


def smaller_beta_higher_kl(results: list[CellResult]) -> Finding:
    return _trend_finding("beta_kl", "Smaller β gives a higher KLD",
                          "final validation KL (metrics/val.csv, last row) falls as β rises", results, [BETA], "kl", -1)


def larger_beta_fewer_active_dims(results: list[CellResult]) -> Finding:
    return _trend_finding("beta_active", "Larger β gives cleaner traversals, showing mostly the dominant colours",
                          f"fewer active latent dimensions (mean KL > {ACTIVE_KL_NATS} nats) as β rises", results, [BETA],
                          "active_dims", -1)


def larger_beta_lower_ssim(results: list[CellResult]) -> Finding:
    return _trend_finding("beta_blur", "Larger β gives blurrier images",
                          "validation SSIM falls as β rises", results, [BETA], "ssim_val", -1)


def larger_beta_lower_fid(results: list[CellResult]) -> Finding:
    """The article's claim on its cars, cats and batik at β = 10 vs 100; else larger β lowers FID anywhere."""
    named = {r.dataset for r in results if r.article in ("cars", "cats", "batik")}
    if named:
        chosen = [r for r in results if r.dataset in named and r.values.get(BETA) in (10, 100)]
        return _trend_finding("beta_fid", "For cars, cats and batik, β = 100 gives the lower FID",
                              "FID at β = 100 below FID at β = 10 (datasets reproducing cars, cats, batik)",
                              chosen, [BETA], "fid", -1)
    return _trend_finding("beta_fid", "For cars, cats and batik, β = 100 gives the lower FID",
                          "general form (no cars, cats or batik in the study): FID falls as β rises",
                          results, [BETA], "fid", -1)


def celeba_best(results: list[CellResult]) -> Finding:
    """CelebA β = 10 has the highest SSIM and PSNR and lowest FID of all grid cells (general form: some cell does)."""
    text = "CelebA β = 10 is best on every metric"
    cells = {r.name: [r] for r in _finished_grid(results)}
    winners = _winners(cells, best=True)
    if not winners:
        return Finding("celeba_best", text, f"{_ranked_text(best=True)} among finished grid cells",
                       UNCHECKED, "fewer than two finished grid cells with these metrics")
    if any(r.article == "celeba" for r in results):
        targets = {name for name, (r,) in cells.items() if r.article == "celeba" and r.values.get(BETA) == 10}
        proxy = f"the cell reproducing CelebA β = 10 has the {_ranked_text(best=True)} of all finished grid cells"
        if not targets:
            return Finding("celeba_best", text, proxy, UNCHECKED, "the CelebA β = 10 cell has not finished")
        return _winner_finding("celeba_best", text, proxy, winners, targets, general=False)
    proxy = f"general form (no CelebA in the study): one finished grid cell has the {_ranked_text(best=True)}"
    return _winner_finding("celeba_best", text, proxy, winners, _most_wins(winners), general=True)


def batik_worst(results: list[CellResult]) -> Finding:
    """The batik dataset has the worst mean SSIM, PSNR and FID (general form: some dataset does)."""
    text = "Batik is the worst dataset"
    datasets = _by_dataset(_finished_grid(results))
    winners = _winners(datasets, best=False)
    if not winners:
        return Finding("batik_worst", text, f"{_ranked_text(best=False)} over a dataset's grid cells",
                       UNCHECKED, "fewer than two datasets with finished grid cells")
    batik = {r.shown_label for r in results if r.article == "batik"}
    if batik:
        proxy = f"the dataset reproducing batik has the {_ranked_text(best=False)}"
        if not batik & set(datasets):
            return Finding("batik_worst", text, proxy, UNCHECKED, "the batik dataset has no finished grid cells")
        return _winner_finding("batik_worst", text, proxy, winners, batik, general=False)
    proxy = f"general form (no batik in the study): one dataset has the {_ranked_text(best=False)}"
    return _winner_finding("batik_worst", text, proxy, winners, _most_wins(winners), general=True)


def disentangle_poorly(results: list[CellResult]) -> Finding:
    """Cars and batik have a lower mean MIG than every other dataset (needs ground-truth factor scores)."""
    text, proxy = "Cars and batik disentangle poorly", "mean MIG over a dataset's finished cells"
    scored = _by_dataset([r for r in results if r.finished and r.value("mig") is not None])
    if not scored:
        return Finding("disentangle", text, proxy, UNCHECKED,
                       "no cell has ground-truth factor scores (the article's datasets have no factor labels)")
    means = {name: _mean(cells, "mig") for name, cells in scored.items()}
    detail = [f"{name}: {SCORES['mig'].label} {SCORES['mig'].format(value)}" for name, value in means.items()]
    poor = {r.shown_label for r in results if r.article in ("cars", "batik")} & set(means)
    others = set(means) - poor
    if not poor or not others:
        return Finding("disentangle", text, proxy, UNCHECKED,
                       "needs factor scores on a dataset reproducing cars or batik and on another dataset", detail)
    k = sum(means[name] < min(means[o] for o in others) for name in poor)
    return Finding("disentangle", text, proxy, tally(k, len(poor)),
                   f"{k}/{len(poor)} of cars/batik below every other dataset", detail)


def architecture_hurts_batik(results: list[CellResult], grid_keys: list[str]) -> Finding:
    """Batch norm on / a larger latent lowers batik's SSIM (general form without batik: any dataset's)."""
    text = "Batch normalisation and a 128-dim latent are suspected of hurting batik"
    keys = [key for key in ("model.batch_norm", "model.latent_dim") if key in grid_keys]
    if not keys:
        return Finding("architecture", text, "SSIM with batch norm on / a larger latent", UNCHECKED,
                       "the study has no grid over model.batch_norm or model.latent_dim")
    batik = {r.dataset for r in results if r.article == "batik"}
    chosen = [r for r in results if r.dataset in batik] if batik else results
    scope = "datasets reproducing batik" if batik else "general form (no batik in the study): every dataset"
    return _trend_finding("architecture", text, f"validation SSIM falls with batch norm on / a larger latent ({scope})",
                          chosen, keys, "ssim_val", -1)


def _trend_finding(key: str, text: str, proxy: str, results: list[CellResult], axes: list[str],
                   metric: str, direction: int) -> Finding:
    """A claim that ``metric`` moves in ``direction`` at every step up of an axis, counted over series."""
    series = [(name, axis, cells) for axis in axes for name, cells in _series(results, axis)]
    outcomes = [_trend(name, axis, cells, metric, direction) for name, axis, cells in series]
    checked = [ok for ok, _ in outcomes if ok is not None]
    detail = [line for _, line in outcomes]
    if not checked:
        return Finding(key, text, proxy, UNCHECKED,
                       f"no dataset has finished grid cells at two or more values of {', '.join(axes)} with {_label(metric)}",
                       detail)
    datasets = [cells[0].shown_label for _, _, cells in series]
    unit = "datasets" if len(set(datasets)) == len(datasets) else "comparisons"
    return Finding(key, text, proxy, tally(sum(checked), len(checked)), f"{sum(checked)}/{len(checked)} {unit}", detail)


def _series(results: list[CellResult], axis: str) -> list[tuple[str, list[CellResult]]]:
    """Finished grid cells of one dataset differing only in ``axis``, sorted along it; one value → dropped."""
    groups: dict[tuple, list[CellResult]] = {}
    for r in _finished_grid(results):
        if axis in r.values:
            others = tuple((k, repr(v)) for k, v in r.values.items() if k != axis)
            groups.setdefault((r.shown_label, others), []).append(r)
    return [(name + (f" ({', '.join(f'{k}={v}' for k, v in others)})" if others else ""),
             sorted(cells, key=lambda c: c.values[axis]))
            for (name, others), cells in groups.items() if len({repr(c.values[axis]) for c in cells}) > 1]


def _trend(name: str, axis: str, cells: list[CellResult], metric: str, direction: int) -> tuple[bool | None, str]:
    values = [c.value(metric) for c in cells]
    steps = ", ".join(f"{_axis_label(axis)}={c.values[axis]} → {_number(v)}" for c, v in zip(cells, values))
    if any(v is None for v in values):
        return None, f"{name}: {steps} (not checked: {_label(metric)} missing)"
    ok = all((b - a) * direction > 0 for a, b in zip(values, values[1:]))
    return ok, f"{name}: {steps} ({HOLDS if ok else FAILS})"


def _winners(groups: dict[str, list[CellResult]], best: bool) -> dict[str, str]:
    """Per ranked metric that two or more groups have: the group with the best (or worst) mean."""
    winners = {}
    for score in RANKED:
        means = {name: m for name, cells in groups.items() if (m := _mean(cells, score.key)) is not None}
        if len(means) >= 2:
            winners[score.label] = (max if (score.better > 0) == best else min)(means, key=means.get)
    return winners


def _ranked_text(best: bool) -> str:
    """The :data:`RANKED` scores in words: "highest PSNR and SSIM, lowest FID" (of a cell), or the
    worst means of a dataset ("lowest mean PSNR and SSIM, highest mean FID")."""
    words = ("highest", "lowest") if best else ("lowest mean", "highest mean")
    parts = [f"{word} {' and '.join(s.label.split(' (')[0] for s in RANKED if s.better == sign)}"
             for word, sign in zip(words, (1, -1)) if any(s.better == sign for s in RANKED)]
    return ", ".join(parts)


def _most_wins(winners: dict[str, str]) -> set[str]:
    names = list(winners.values())
    return {max(names, key=names.count)}


def _winner_finding(key: str, text: str, proxy: str, winners: dict[str, str], targets: set[str],
                    general: bool) -> Finding:
    k, n = sum(name in targets for name in winners.values()), len(winners)
    verdict = (HOLDS if k == n else PARTLY if k > 1 else FAILS) if general else tally(k, n)
    evidence = f"{', '.join(sorted(targets))}: {k}/{n} metrics"
    return Finding(key, text, proxy, verdict, evidence, [f"{label}: {name}" for label, name in winners.items()])


def _finished_grid(results: list[CellResult]) -> list[CellResult]:
    return [r for r in results if r.finished and r.group == "grid"]


def _by_dataset(results: list[CellResult]) -> dict[str, list[CellResult]]:
    groups: dict[str, list[CellResult]] = {}
    for r in results:
        groups.setdefault(r.shown_label, []).append(r)
    return groups


def _mean(cells: list[CellResult], metric: str) -> float | None:
    values = [v for c in cells if (v := c.value(metric)) is not None]
    return sum(values) / len(values) if values else None


def _label(metric: str) -> str:
    return SCORES[metric].label if metric in SCORES else metric


def _axis_label(axis: str) -> str:
    return "β" if axis == BETA else axis.rsplit(".", 1)[-1]


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"

