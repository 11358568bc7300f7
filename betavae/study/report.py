"""A study's ``report.html``: Tables 2–4 beside the article's numbers, the findings, Fig. 9/10 and every
cell's samples, traversals and KL bars, in one self-contained file (images as data: URIs, no external
CSS or scripts), plus the tables as ``tables/*.csv`` and ``tables/*.md``."""
from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from betavae.evaluation.figure_set import FIGURES  # noqa: E402
from betavae.evaluation.headline import SCORES  # noqa: E402
from betavae.evaluation.reconstruction import IMAGE_METRICS  # noqa: E402
from betavae.evaluation.scores import LATENT_SCORES, SAMPLE_QUALITY_SCORES, Score  # noqa: E402
from betavae.figures import CURVE_TERMS, figure_png, image_grid, image_png, plot_log, with_row_labels  # noqa: E402
from betavae.fileio import write_json, write_text  # noqa: E402
from betavae.inference import load  # noqa: E402
from betavae.latents import ACTIVE_KL_NATS  # noqa: E402
from betavae.runs import RunPaths, read_csv  # noqa: E402
from betavae.starts import describe_starts  # noqa: E402
from betavae.study.article import FID_SAMPLES, ArticleNumbers, article_numbers  # noqa: E402
from betavae.study.findings import (  # noqa: E402
    FACTOR_SCORES, MEDIANS, SEED, CellResult, Finding, SettingResult, by_setting, check_findings, has_seeds)
from betavae.study.folder import STATES, StudyPaths, check_entries, read_state  # noqa: E402
from betavae.study.spec import display_key  # noqa: E402
from betavae.study.udr import (  # noqa: E402
    MIN_CORRELATION_MODELS, ONE_SEED, UDR_IMAGES, UDR_SCORE, UDR_SIMILARITY, StudyUDR, study_udr, udr_correlations)

DASH = "—"
PSNR_CAVEAT = ("The article does not say on which pixel scale PSNR was computed; PSNR near 29 dB beside SSIM near "
               "0.2 suggests a scale other than [0, 1]. Ours: images mapped back to [0, 1], data range 1, so our "
               "PSNR and the article's are not on the same scale and should not be compared directly.")
# Each cell's figures shown in the report: FIGURES entries (their files and captions) → section titles.
CELL_FIGURES = {"samples": "Random samples", "traversals": "Latent traversals", "kl_per_dim": "KL per latent dimension"}
# Table 3's columns: the sample-quality scores, a score's standard deviation (KID std) shown beside its mean.
SAMPLE_COLUMNS = tuple(s for s in SAMPLE_QUALITY_SCORES if not (s.key.endswith("_std") and s.key[:-4] in SCORES))
_SUMMARIES = {"val": "validation", "outside": "outside"}  # image set → its section in metrics.json's reconstruction
STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{text-align:left;padding:2px 10px;border-bottom:1px solid #ddd}
th{background:#f4f4f4}.article{background:#fff6e0}figure{margin:1.2em 0}
img{max-width:100%;image-rendering:pixelated}figcaption,.note{color:#555}"""


@dataclass
class Table:
    """A report table: its file stem, column names and rows of display strings."""

    key: str
    columns: list[str]
    rows: list[list[str]]


def write_report(study_dir: str | Path, out: str | Path | None = None) -> Path:
    """Writes the study's report (default ``STUDY/report.html``) and ``STUDY/tables/``; returns the report's path."""
    paths = StudyPaths(Path(study_dir))
    state = read_state(paths.root)
    results = collect(paths.root, state)
    grid_keys = state.get("grid_keys", [])
    findings = check_findings(results, grid_keys)
    found = study_udr(results) if has_seeds(results) else None
    tables = {"table2": table2(results, grid_keys), "table3": table3(results, grid_keys), "table4": table4(results),
              "disentanglement": disentanglement_table(results, found), "findings": findings_table(findings)}
    if found is not None:
        write_json(paths.udr, {"similarity": UDR_SIMILARITY, "images": UDR_IMAGES, "scores": found.scores,
                               "reasons": found.reasons, "settings": found.details})
        tables.update(seeds=seeds_table(results, found), seeds_long=seeds_long_table(results, found),
                      udr_correlation=udr_correlation_table(results, found))
    tables = {key: table for key, table in tables.items() if table is not None}
    for table in tables.values():
        write_table(paths.tables, table)
    out = Path(out) if out else paths.report
    write_text(out, _page(state, results, tables, found))
    return out


def collect(root: Path, state: dict) -> list[CellResult]:
    """Every cell of ``study.json`` with its config, headline and last validation row (when present)."""
    check_entries(root, state)
    return [CellResult.read(root, entry) for entry in state["cells"].values()]


def _article(result: CellResult) -> ArticleNumbers | None:
    return article_numbers(result.article, result.config)


# ----------------------------------------------------------------------------------------------- tables

def table2(results: list[CellResult], grid_keys: list[str]) -> Table:
    """Reconstruction quality of the grid cells (ours: validation, and outside images when evaluated)."""
    grid = [r for r in results if r.group == "grid"]
    outside = any(r.value("n_outside") is not None for r in grid)
    columns = ["dataset", *map(display_key, grid_keys), "β·w", *_image_columns("val")]
    columns += _image_columns("outside", "outside ") if outside else []
    columns += _image_columns("val", "article ", article=True)
    rows = []
    for r in grid:
        row = [r.shown_label, *(_value(r.values.get(k)) for k in grid_keys), _effective(r)]
        row += _image_scores(r, "val") + (_image_scores(r, "outside") if outside else [])
        rows.append(row + _article_scores(_article(r)))
    return Table("table2_reconstruction", columns, rows)


def table3(results: list[CellResult], grid_keys: list[str]) -> Table:
    """FID and KID of the grid cells' prior samples, the article's FID beside."""
    columns = ["dataset", *map(display_key, grid_keys), *(s.label for s in SAMPLE_COLUMNS),
               "article dataset", f"article FID (N = {FID_SAMPLES})"]
    rows = []
    for r in results:
        if r.group != "grid":
            continue
        ours = [_shown(r, s) for s in SAMPLE_COLUMNS] if r.finished else [_status(r)] * len(SAMPLE_COLUMNS)
        article = _article(r)
        theirs = [article.name, _fixed(article.fid, 3)] if article else [DASH, DASH]
        rows.append([r.shown_label, *(_value(r.values.get(k)) for k in grid_keys), *ours, *theirs])
    return Table("table3_sample_quality", columns, rows)


def table4(results: list[CellResult]) -> Table:
    """The extra cells (the article's batik KLD-weight runs) with the article's Table 4 beside."""
    columns = ["dataset", "settings", "β·w", *_image_columns("val"), *_image_columns("val", "article ", article=True)]
    rows = [[r.shown_label, r.describe(), _effective(r), *_image_scores(r, "val"), *_article_scores(_article(r))]
            for r in results if r.group == "extra"]
    return Table("table4_extra_cells", columns, rows)


def disentanglement_table(results: list[CellResult], found: StudyUDR | None = None) -> Table | None:
    """Ground-truth factor scores of the cells that have them, or None when no cell has any; with
    ``found`` (a study sweeping seeds) each cell's UDR beside them (— when its setting has one seed)."""
    scored = [r for r in results if r.finished and (any(r.value(s.key) is not None for s in FACTOR_SCORES)
                                                    or (found is not None and found.value(r.name) is not None))]
    if not scored:
        return None
    shown = [s for s in FACTOR_SCORES if any(r.value(s.key) is not None for r in scored)]
    rows = [[r.shown_label, r.describe(), *(_shown(r, s) for s in shown),
             *([UDR_SCORE.format(found.value(r.name))] if found is not None else [])] for r in scored]
    udr_column = [UDR_SCORE.label] if found is not None else []
    return Table("disentanglement", ["dataset", "settings", *(s.label for s in shown), *udr_column], rows)


def summarised_scores(results: list[CellResult]) -> list[Score]:
    """The :data:`SCORES` entries aggregated over seeds: every ranked score (image, sample-quality and
    factor scores) and the latent counts, in registry order, that some finished cell has."""
    return [s for s in SCORES.values() if (s.better or s in LATENT_SCORES)
            and any(r.finished and r.value(s.key) is not None for r in results)]


def spread(score: Score, values: list[float]) -> str:
    """Median, interquartile range and min–max of one setting's values over its seeds (the value
    alone for one seed; — for none). Quartiles: numpy's linear interpolation."""
    if not values:
        return DASH
    if len(values) == 1:
        return _number(score, values[0])
    if min(values) == max(values):
        return f"{_number(score, values[0])} (every seed)"
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return (f"{_number(score, median)} (IQR {_number(score, q1)}–{_number(score, q3)}; "
            f"range {_number(score, min(values))}–{_number(score, max(values))})")


def _number(score: Score, value: float) -> str:
    return f"{value:g}" if score.integer else f"{value:.{score.digits}f}"


def _seed_count(setting: SettingResult) -> str:
    done = len(setting.seeds)
    other = len(setting.members) - done
    return f"{done} seed{'' if done == 1 else 's'}" + (f" ({other} not finished)" if other else "")


def _udr_values(setting: SettingResult, found: StudyUDR) -> list[float]:
    return [v for c in setting.members if (v := found.value(c.name)) is not None]


def seeds_table(results: list[CellResult], found: StudyUDR) -> Table:
    """One row per setting (a cell's values without the seed): each summarised score as median (IQR;
    min–max) over the setting's finished seeds, and the UDR of its models the same way."""
    scores = summarised_scores(results)
    rows = []
    for setting in by_setting(results):
        row = [setting.shown_label, setting.describe(), _seed_count(setting)]
        row += [spread(s, [v for _, v in setting.values_of(s.key)]) for s in scores]
        rows.append(row + [spread(UDR_SCORE, _udr_values(setting, found))])
    return Table("seeds", ["dataset", "settings", "seeds", *(s.label for s in scores), UDR_SCORE.label], rows)


def seeds_long_table(results: list[CellResult], found: StudyUDR) -> Table:
    """:func:`seeds_table` as numbers, one row per setting and score (for analysis; not on the page)."""
    rows = []
    for setting in by_setting(results):
        series = [(s, [v for _, v in setting.values_of(s.key)]) for s in summarised_scores(results)]
        for score, values in series + [(UDR_SCORE, _udr_values(setting, found))]:
            if values:
                q1, median, q3 = np.percentile(values, [25, 50, 75])
                numbers = [f"{x:.6g}" for x in (median, q1, q3, min(values), max(values))]
                rows.append([setting.shown_label, setting.describe(), score.key, str(len(values)), *numbers])
    return Table("seeds_long", ["dataset", "settings", "score", "seeds", "median", "q1", "q3", "min", "max"], rows)


def udr_correlation_table(results: list[CellResult], found: StudyUDR) -> Table:
    """Spearman rank correlation between the models' UDR and each ground-truth factor score."""
    rows = [[score.label, str(n), DASH if rho is None else f"{rho:+.3f}", note or DASH]
            for score, n, rho, note in udr_correlations(results, found, list(FACTOR_SCORES))]
    return Table("udr_correlation", ["supervised score", "models", "Spearman ρ with UDR", "note"], rows)


def findings_table(findings: list[Finding]) -> Table:
    """The findings as rows: the article's claim, our proxy, the verdict, counts and per-dataset detail."""
    rows = [[f.finding, f.proxy, f.verdict, f.evidence, "; ".join(f.detail)] for f in findings]
    return Table("findings", ["finding (article)", "proxy (ours)", "verdict", "evidence", "detail"], rows)


def write_table(folder: Path, table: Table) -> None:
    """Writes ``folder/KEY.csv`` and ``folder/KEY.md`` atomically."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    write_text(folder / f"{table.key}.csv", text.getvalue())
    write_text(folder / f"{table.key}.md", markdown(table))


def markdown(table: Table) -> str:
    """A Markdown pipe table."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(table.columns), line(["---"] * len(table.columns)), *map(line, table.rows)]) + "\n"


def _image_columns(image_set: str, prefix: str = "", article: bool = False) -> list[str]:
    """The columns of one image set's reconstruction scores: every :data:`IMAGE_METRICS` entry and n
    (the article's columns start with the dataset's name in the article)."""
    return ([f"{prefix}dataset"] if article else []) + [
        prefix + label for label in (*(m.label for m in IMAGE_METRICS.values()), SCORES[f"n_{image_set}"].label)]


def _image_scores(result: CellResult, image_set: str) -> list[str]:
    """Every image metric as mean ± std, and n, of one image set ("val" or "outside"); the cell's state
    when it has not finished."""
    if not result.finished:
        return [_status(result)] * (len(IMAGE_METRICS) + 1)
    if result.value(f"n_{image_set}") is None:
        return [DASH] * (len(IMAGE_METRICS) + 1)
    summaries = (result.reconstruction or {}).get(_SUMMARIES[image_set], {})
    return [_shown(result, SCORES[f"{name}_{image_set}"], summaries.get(name, {}).get("std"))
            for name in IMAGE_METRICS] + [_shown(result, SCORES[f"n_{image_set}"])]


def _shown(result: CellResult, score: Score, std: float | None = None) -> str:
    """A headline score as the tables show it (registry digits), ± its standard deviation when known
    (given, or the registered ``<key>_std`` score)."""
    if std is None and f"{score.key}_std" in SCORES:
        std = result.value(f"{score.key}_std")
    value = result.value(score.key)
    if value is None or std is None or not math.isfinite(std):
        return score.format(value)
    return f"{score.format(value)} ± {std:.{score.digits}f}"


def _article_scores(article: ArticleNumbers | None) -> list[str]:
    """The article's dataset, image metrics (as printed: three decimals; — for one it does not report) and n."""
    if article is None:
        return [DASH] * (len(IMAGE_METRICS) + 2)
    return [article.name, *(_fixed(getattr(article, name, None), 3) for name in IMAGE_METRICS), _value(article.n)]


def _effective(result: CellResult) -> str:
    """The effective KL weight β·w of a β-VAE cell (what the literature calls the normalised β's analogue)."""
    objective = result.config.objective if result.config else None
    if objective is None or objective.name != "beta":
        return DASH
    return f"{objective.beta * objective.kld_weight:g}"


def _status(result: CellResult) -> str:
    return result.state if result.state != "finished" else "not evaluated"


def _fixed(value: float | None, digits: int) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _value(value) -> str:
    if value is None:
        return DASH
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------- figures

def fig9(results: list[CellResult]) -> bytes | None:
    """Training curves, one row per dataset, one column per :data:`~betavae.figures.CURVE_TERMS` term
    (reconstruction loss, KL), one colour per cell: train solid (smoothed), validation dashed."""
    datasets = _grid_by_dataset(results)
    if not datasets:
        return None
    figure, axes = plt.subplots(len(datasets), len(CURVE_TERMS), figsize=(11, 3.4 * len(datasets)), squeeze=False)
    for row, (name, cells) in zip(axes, datasets.items()):
        logs = [(read_csv(RunPaths(cell.run).train_log), read_csv(RunPaths(cell.run).val_log)) for cell in cells]
        for i, (cell, (train, val)) in enumerate(zip(cells, logs)):
            for axis, (term, _) in zip(row, CURVE_TERMS):
                plot_log(axis, term, train, val, f"C{i}", f"{cell.describe()} train (smoothed)",
                         f"{cell.describe()} validation")
        for axis, (term, title) in zip(row, CURVE_TERMS):
            axis.set(title=f"{name}: {title}", xlabel="step")
            axis.set_ylim(*_settled_range([train + val for train, val in logs], term))
            axis.grid(alpha=0.3)
        row[0].legend(fontsize="small")
    figure.tight_layout()
    return figure_png(figure)


def seeds_figure(results: list[CellResult], found: StudyUDR | None) -> bytes | None:
    """One panel per summarised score (and UDR): the settings along x, a dot per seed, a bar at the median."""
    settings = [s for s in by_setting(results) if s.seeds]
    panels = [(score, [[v for _, v in setting.values_of(score.key)] for setting in settings])
              for score in summarised_scores(results)]
    if found is not None:
        panels.append((UDR_SCORE, [_udr_values(setting, found) for setting in settings]))
    panels = [(score, points) for score, points in panels if any(points)]
    if not settings or not panels:
        return None
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False)
    several = len({s.shown_label for s in settings}) > 1
    labels = [f"{s.shown_label}: {s.describe()}" if several else s.describe() for s in settings]
    for axis, (score, points) in zip(axes.flat, panels):
        for x, values in enumerate(points):
            if values:
                jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0.0]
                axis.scatter(x + np.asarray(jitter), values, s=16, color="C0", alpha=0.8, zorder=3)
                axis.hlines(np.median(values), x - 0.25, x + 0.25, color="k", lw=1.5, zorder=4)
        axis.set_title(score.label)
        axis.set_xticks(range(len(settings)), labels, rotation=35, ha="right", fontsize="small")
        axis.set_xlim(-0.6, len(settings) - 0.4)
        axis.grid(alpha=0.3, axis="y")
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.tight_layout()
    return figure_png(figure)


def _settled_range(logs: list[list[dict]], term: str, skip: float = 0.05) -> tuple[float, float]:
    """The y range of a term in each cell's log rows after the first ``skip`` of training (the first
    steps' spike would flatten the rest)."""
    values = []
    for rows in logs:
        last = max((r["step"] for r in rows), default=0)
        values += [r[term] for r in rows if r["step"] >= skip * last]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    margin = 0.05 * (high - low) or 0.05 * abs(high) or 1.0
    return low - margin, high + margin


def fig10(cells: list[CellResult], count: int = 8) -> tuple[bytes, list[str]]:
    """Ground truth and each cell's reconstruction of the same validation images (from the first cell's data);
    also the cells left out because their images have another size or channel count."""
    first = load(cells[0].run)
    images = first.images(first.validation_sample(count, seed=0))
    rows, labels, skipped = [images], ["ground truth"], []
    for cell in cells:
        trained = first if cell is cells[0] else load(cell.run)
        if (trained.image_size, trained.channels) != (first.image_size, first.channels):
            skipped.append(cell.describe())
            continue
        rows.append(trained.reconstruct(images))
        labels.append(cell.describe())
    grid = image_grid(torch.cat(rows), nrow=len(images), scale=2)
    return image_png(with_row_labels(grid, labels, grid.height // len(labels))), skipped


def _grid_by_dataset(results: list[CellResult]) -> dict[str, list[CellResult]]:
    datasets: dict[str, list[CellResult]] = {}
    for r in results:
        if r.finished and r.group == "grid":
            datasets.setdefault(r.shown_label, []).append(r)
    return datasets


# ------------------------------------------------------------------------------------------------- page

def _page(state: dict, results: list[CellResult], tables: dict[str, Table], found: StudyUDR | None = None) -> str:
    """The whole HTML page: a contents line, then one section per (id, title, body)."""
    name = html.escape(state.get("name", "study"))
    sections = [("overview", "Overview", _overview(state, results)),
                ("table2", "Table 2 — reconstruction quality", _html_table(tables["table2"]) + _table2_notes()),
                ("table3", "Table 3 — sample quality", _html_table(tables["table3"]) + _note(
                    "FID and KID of N samples decoded from z ~ N(0, I) against N reference training images. "
                    f"The article's FID used N = {FID_SAMPLES} samples and an unstated reference set and feature "
                    "network; FID is biased by N, so compare only at equal N and reference set. "
                    f"{DASH}: evaluated without FID.")),
                ("table4", "Table 4 — extra cells", _html_table(tables["table4"]) if tables["table4"].rows
                 else _note("The study has no extra cells."))]
    if "seeds" in tables:
        sections.append(("seeds", "Seeds — median and spread per setting", _seeds_body(results, tables, found)))
    if "disentanglement" in tables:
        sections.append(("disentanglement", "Disentanglement (ground-truth factors)",
                         _html_table(tables["disentanglement"]) + _udr_body(tables, found)))
    sections += [("findings", "Findings of the article, checked", _html_table(tables["findings"]) + _note(
                     "Each finding is checked with the measurable proxy named beside it; β is compared only within "
                     "a dataset among grid cells that differ in nothing else.")),
                 ("fig9", "Fig. 9 — training curves", _fig9_body(results)),
                 ("fig10", "Fig. 10 — ground truth and reconstructions", _fig10_body(results))]
    sections += [(key, title, _cell_figures(results, key)) for key, title in CELL_FIGURES.items()]
    contents = " · ".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title, _ in sections)
    body = "\n".join(f'<section><h2 id="{key}">{html.escape(title)}</h2>{text}</section>' for key, title, text in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>betavae study {name}</title>'
            f"<style>{STYLE}</style></head>\n<body><h1>Study {name}</h1><p>{contents}</p>\n{body}\n</body></html>\n")


def _seeds_body(results: list[CellResult], tables: dict[str, Table], found: StudyUDR | None) -> str:
    png = seeds_figure(results, found)
    figure = _img(png, "Every seed's value (dots) and the median (bar) per setting, one panel per score") if png else ""
    return (_html_table(tables["seeds"]) + _note(
        f"The study sweeps {SEED}: each row is one setting (the cells' values without the seed). Every score is "
        "the median over the setting's finished seeds, then (IQR q1–q3; range min–max), quartiles by linear "
        f"interpolation; a setting with one seed shows its value and “1 seed”. UDR: {DASH} where the setting "
        f"{ONE_SEED}. The findings compare settings by these medians. The numbers: tables/seeds_long.csv.")
        + figure)


def _udr_body(tables: dict[str, Table], found: StudyUDR | None) -> str:
    if found is None:
        return _note("UDR (unsupervised disentanglement ranking) compares a model with other seeds of its setting; "
                     f"this study has one seed per setting (sweep {SEED} in the grid to get it).")
    reasons = "; ".join(f"{name}: {reason}" for name, reason in found.reasons.items())
    counts = sorted({detail["images"] for detail in found.details.values()}) or [UDR_IMAGES]
    text = _note(f"UDR (Duan et al. 2020): each model's codes (encoder means) of the same "
                 f"{' or '.join(map(str, counts))} validation "
                 f"images are compared with those of the other seeds of its setting ({UDR_SIMILARITY} similarity, "
                 f"dimensions with mean KL ≤ {ACTIVE_KL_NATS} nats dropped); a model's UDR is the median of its pair scores. "
                 "No labels needed." + (f" {DASH}: {reasons}." if reasons else "") + " Details: udr.json.")
    return (text + "<h3 id=\"udr-correlation\">UDR against the supervised scores</h3>"
            + _html_table(tables["udr_correlation"])
            + _note(f"Spearman rank correlation over the study's models that have both numbers (at least "
                    f"{MIN_CORRELATION_MODELS}); positive: UDR ranks the models as the supervised score does."))


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _overview(state: dict, results: list[CellResult]) -> str:
    counts = Counter(r.state for r in results)
    shown = ", ".join(f"{counts[s]} {s}" for s in [*STATES, *sorted(set(counts) - set(STATES))] if counts[s])
    body = (f"<p>{html.escape(state.get('description') or '')}</p>"
            f"<p>{len(results)} cells: {html.escape(shown)}. Grid: {html.escape(', '.join(state.get('grid_keys', [])) or DASH)}."
            f" Study file: <code>{html.escape(str(state.get('study_file', DASH)))}</code></p>")
    failed = [r for r in results if r.state == "failed"]
    if failed:
        table = Table("failed", ["cell", "dataset", "settings", "attempts", "error"],
                      [[r.name, r.shown_label, r.describe(), _value(_attempts(state, r)), r.error or DASH] for r in failed])
        body += f'<h3 id="failed">Failed cells</h3>{_html_table(table)}'
    chosen = [(r, describe_starts(r.run)) for r in results if r.run is not None]
    chosen = [[r.name, r.shown_label, r.describe(), line] for r, line in chosen if line]
    if chosen:
        table = Table("starts", ["cell", "dataset", "settings", "starts"], chosen)
        body += f'<h3 id="starts">Cells chosen among starts</h3>{_html_table(table)}' + _note(
            "The study's starts: each cell trained its seed, seed + 1, … for a few steps, kept the first whose "
            "traversals were separated enough (no labels; when none was, the best separated) and trained it to "
            "the full budget; a cell's scores are those of the seed it kept.")
    return body


def _attempts(state: dict, result: CellResult):
    return state["cells"][result.name].get("attempts")


def _table2_notes() -> str:
    return (_note("SSIM and PSNR: mean ± standard deviation over n validation images (and the outside images, when "
                  "the study evaluated a folder of them as the article did), reconstructions from the posterior mean. "
                  "β·w: the effective weight on the KL term (the study's β times the KLD weight w) of a per-element "
                  "MSE, the number to use when comparing β with the literature. Columns headed “article” are the "
                  "article's Table 2, shown where a cell reproduces its dataset, β and KLD weight 0.0025.")
            + _note(PSNR_CAVEAT))


def _html_table(table: Table) -> str:
    article = [c.startswith("article") for c in table.columns]
    head = "".join(f'<th{" class=article" if a else ""}>{html.escape(c)}</th>' for c, a in zip(table.columns, article))
    body = "".join("<tr>" + "".join(f'<td{" class=article" if a else ""}>{html.escape(v)}</td>'
                                    for v, a in zip(row, article)) + "</tr>" for row in table.rows)
    return f'<table data-name="{html.escape(table.key)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _fig9_body(results: list[CellResult]) -> str:
    png = fig9(results)
    return _img(png, "Training curves per dataset: reconstruction loss and KL; train solid (smoothed; raw faint), "
                     "validation dashed with markers; one colour per grid cell") if png else _note("No finished grid cells.")


def _fig10_body(results: list[CellResult]) -> str:
    parts = []
    for name, cells in _grid_by_dataset(results).items():
        png, skipped = fig10(cells)
        caption = (f"{name}: the same 8 validation images (seed 0), ground truth then each cell's reconstruction "
                   "from the posterior mean")
        parts.append(_img(png, caption + (f"; left out (other image size): {', '.join(skipped)}" if skipped else "")))
    return "".join(parts) or _note("No finished grid cells.")


def _cell_figures(results: list[CellResult], key: str) -> str:
    """Every finished cell's figure ``key`` of :data:`~betavae.evaluation.figure_set.FIGURES`, with its caption."""
    spec = FIGURES[key]
    parts = []
    for r in results:
        path = RunPaths(r.run).figure(spec.file)
        if r.finished and path.is_file():
            parts.append(_img(path.read_bytes(), f"{r.name} ({r.shown_label}, {r.describe()}): {spec.caption}"))
    return "".join(parts) or _note("No finished cells with this figure.")
