"""The study report: a real (tiny) finished study folder, built without Ray, and the findings logic."""
import base64
import csv
import io
import json
import warnings
from html.parser import HTMLParser

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn

from betavae.config import validate_config
from betavae.evaluation.headline import SCORES, Headline
from betavae.evaluation.run_eval import EvalOptions, evaluate_run
from betavae.metrics.fid import FeatureExtractor
from betavae.runs import RunPaths
from betavae.study.article import article_numbers
from betavae.study.findings import (
    FAILS,
    HOLDS,
    PARTLY,
    RANKED,
    UNCHECKED,
    CellResult,
    architecture_hurts_batik,
    batik_worst,
    celeba_best,
    check_findings,
    disentangle_poorly,
    larger_beta_lower_fid,
    smaller_beta_lower_reconstruction,
)
from betavae.study.folder import StudyPaths, write_state
from betavae.study.report import write_report
from betavae.study.runner import _initial_state
from betavae.study.spec import load_study
from betavae.training import train

SECTIONS = ["overview", "table2", "table3", "table4", "disentanglement", "findings", "fig9", "fig10",
            "samples", "traversals", "kl_per_dim"]
FACTOR_CELL = "dsprites_beta10"  # the one cell evaluated with disentanglement metrics (DCI takes ~15 s a cell)
FAILED_ERROR = "RuntimeError: loss diverged <nan> & stopped"
STUDY = {
    "name": "mini",
    "description": "a tiny <study> & its report",
    "base": {"data": {"num_images": 256, "image_size": 32}, "model": {"preset": "tiny"},
             "train": {"max_steps": 8, "batch_size": 16, "lr": 0.003, "progress": False, "checkpoint_every": 4,
                       "val_every": 4},
             "objective": {"name": "beta", "reconstruction": "mse_mean", "kld_weight": 0.0025}},
    "datasets": {"dsprites": {"set": {"data.name": "dsprites"}},
                 "shapes": {"set": {"data.name": "shapes-rgb"}, "article": "celeba"}},
    "grid": {"objective.beta": [10, 100]},
    "extra": [{"dataset": "dsprites", "set": {"objective.beta": 1, "objective.kld_weight": 0.000001}}],
}


class StandIn(nn.Module):
    """A tiny fixed feature network in place of Inception: (N, 3, 299, 299) → (N, 16)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, kernel_size=23, stride=23)

    def forward(self, x):
        return F.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 1).flatten(1)


class Page(HTMLParser):
    """The parts of report.html the tests look at: h2 ids, tables by data-name, img sources, text."""

    def __init__(self, text: str):
        super().__init__()
        self.ids, self.images, self.tables, self.text = [], [], {}, []
        self._table = self._row = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h2":
            self.ids.append(attrs["id"])
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table":
            self._table = self.tables.setdefault(attrs["data-name"], {"columns": [], "rows": []})
        elif tag == "tr":
            self._row, self._header = [], False
        elif tag in ("th", "td"):
            self._cell, self._header = [], tag == "th"

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            self._table["columns" if self._header else "rows"].append(self._row)

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def build_study(root, study: dict, evaluate) -> tuple[StudyPaths, dict]:
    """A study folder ``root/out`` built without Ray: the study file written to ``root/NAME.yaml``, every
    cell trained, then ``evaluate(cell, run_dir)``; returns its paths and initial (all finished) state."""
    study_file = root / f"{study['name']}.yaml"
    study_file.write_text(yaml.safe_dump(study, allow_unicode=True))
    spec, cells = load_study(study_file)
    paths = StudyPaths(root / "out")
    for cell in cells:
        train(cell.config, paths.cell(cell.name))
        evaluate(cell, paths.cell(cell.name))
    return paths, _initial_state(spec, cells, paths, study_file)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished study of 5 cells (trained and evaluated here, no Ray) plus one failed cell; its report."""
    root = tmp_path_factory.mktemp("study")
    extractor = FeatureExtractor(StandIn(), "stand-in:study", batch_size=16, progress=False)

    def evaluate(cell, run_dir):
        options = EvalOptions(fid=True, kid=True, fid_samples=32, fid_reference=32, cache_dir=root / "fid-cache",
                              disentanglement=cell.name == FACTOR_CELL, disentanglement_points=200, dci_points=100,
                              progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # FID from 32 samples is biased: expected here
            evaluate_run(run_dir, options, extractor=extractor)

    paths, state = build_study(root, STUDY, evaluate)
    state["cells"]["shapes_beta1000"] = {
        "name": "shapes_beta1000", "dataset": "shapes", "label": "shapes", "article": "celeba", "group": "grid",
        "values": {"objective.beta": 1000}, "describe": "β=1000", "run": "cells/shapes_beta1000", "state": "failed",
        "attempts": 2, "error": FAILED_ERROR, "seconds": None, "skipped": False}
    write_state(paths, state)
    report = write_report(paths.root)
    return paths, state, report.read_text(), Page(report.read_text())


def _metrics(paths, name):
    return json.loads(RunPaths(paths.cell(name)).eval_metrics.read_text())


def _rows(page, table, column, value):
    columns = page.tables[table]["columns"][0]
    return [dict(zip(columns, row)) for row in page.tables[table]["rows"] if dict(zip(columns, row))[column] == value]


def test_report_has_every_section_in_order_and_no_external_resources(study):
    paths, _, text, page = study
    assert page.ids == SECTIONS
    assert paths.report.is_file()
    assert "http://" not in text and "https://" not in text and "<script" not in text and "<link" not in text
    assert "a tiny <study> & its report" in "".join(page.text)  # escaped in the file, intact once parsed
    assert "data range 1" in "".join(page.text) and "PSNR" in "".join(page.text)  # the PSNR-scale caveat


def test_every_image_is_an_embedded_png(study):
    *_, page = study
    assert len(page.images) == 1 + 2 + 3 * 5  # Fig. 9, Fig. 10 per dataset, 3 figures per finished cell
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()
        assert image.format == "PNG" and image.width > 0


def test_table2_has_one_row_per_grid_cell_with_the_cells_numbers(study):
    paths, state, _, page = study
    table = page.tables["table2_reconstruction"]
    columns = table["columns"][0]
    grid = [e for e in state["cells"].values() if e["group"] == "grid"]
    assert len(table["rows"]) == len(grid) == 5
    for entry, row in zip(grid, table["rows"]):
        row = dict(zip(columns, row))
        assert (row["dataset"], row["β"]) == (entry["dataset"], str(entry["values"]["objective.beta"]))
        if entry["state"] != "finished":
            assert row["SSIM"] == row["PSNR (dB)"] == "failed"
            continue
        validation = _metrics(paths, entry["name"])["reconstruction"]["validation"]
        assert row["SSIM"] == f"{validation['ssim']['mean']:.3f} ± {validation['ssim']['std']:.3f}"
        assert row["PSNR (dB)"] == f"{validation['psnr']['mean']:.2f} ± {validation['psnr']['std']:.2f}"
        assert row["n"] == str(validation["n"])
        assert row["β·w"] == f"{entry['values']['objective.beta'] * 0.0025:g}"


def test_the_articles_celeba_numbers_sit_only_in_the_shapes_rows(study):
    *_, page = study
    article = {10: ("0.293", "29.668", "138.452"), 100: ("0.242", "29.475", "149.211")}
    for beta, (ssim, psnr, fid) in article.items():
        (row,) = [r for r in _rows(page, "table2_reconstruction", "dataset", "shapes") if r["β"] == str(beta)]
        assert (row["article dataset"], row["article SSIM"], row["article PSNR (dB)"], row["article n"]) == (
            "CelebA", ssim, psnr, "2036")
        (row,) = [r for r in _rows(page, "table3_sample_quality", "dataset", "shapes") if r["β"] == str(beta)]
        assert (row["article dataset"], row["article FID (N = 2400)"]) == ("CelebA", fid)
    (failed,) = _rows(page, "table2_reconstruction", "β", "1000")
    assert failed["article SSIM"] == "—"  # no config, no match
    for table in ("table2_reconstruction", "table3_sample_quality"):
        for row in _rows(page, table, "dataset", "dsprites"):
            assert all(value == "—" for key, value in row.items() if key.startswith("article"))


def test_table3_shows_fid_kid_and_sample_counts(study):
    paths, _, _, page = study
    (row,) = [r for r in _rows(page, "table3_sample_quality", "dataset", "dsprites") if r["β"] == "100"]
    headline = _metrics(paths, "dsprites_beta100")["headline"]
    assert row["FID"] == f"{headline['fid']:.2f}" and row["KID"] == f"{headline['kid']:.4f} ± {headline['kid_std']:.4f}"
    assert (row["N samples"], row["N reference"]) == ("32", "32")
    assert "KID std" not in row  # shown beside KID


def test_table4_lists_the_extra_cell(study):
    paths, _, _, page = study
    (row,) = _rows(page, "table4_extra_cells", "dataset", "dsprites")
    assert len(page.tables["table4_extra_cells"]["rows"]) == 1
    assert row["settings"] == "β=1, kld_weight=1e-06" and row["β·w"] == "1e-06"
    ssim = _metrics(paths, "dsprites_beta1_kldw1e-06")["reconstruction"]["validation"]["ssim"]
    assert row["SSIM"] == f"{ssim['mean']:.3f} ± {ssim['std']:.3f}"


def test_disentanglement_table_holds_the_factor_scores(study):
    paths, _, _, page = study
    (row,) = page.tables["disentanglement"]["rows"]
    columns = page.tables["disentanglement"]["columns"][0]
    assert dict(zip(columns, row))["MIG"] == SCORES["mig"].format(_metrics(paths, FACTOR_CELL)["headline"]["mig"])
    assert columns[:2] == ["dataset", "settings"] and set(columns[2:]) <= {s.label for s in SCORES.values()}


def test_failed_cell_is_listed_with_its_error(study):
    *_, page = study
    (row,) = page.tables["failed"]["rows"]
    assert row[0] == "shapes_beta1000" and row[-1] == FAILED_ERROR
    assert "6 cells: 5 finished, 1 failed" in "".join(page.text)


def test_csv_and_markdown_tables_match_the_html(study):
    paths, _, _, page = study
    names = ["table2_reconstruction", "table3_sample_quality", "table4_extra_cells", "findings", "disentanglement"]
    assert sorted(p.name for p in paths.tables.iterdir()) == sorted(f"{n}.{x}" for n in names for x in ("csv", "md"))
    for name in names:
        header, *rows = list(csv.reader(io.StringIO((paths.tables / f"{name}.csv").read_text())))
        assert [header] == page.tables[name]["columns"] and rows == page.tables[name]["rows"], name
        assert len((paths.tables / f"{name}.md").read_text().splitlines()) == len(rows) + 2


def test_findings_table_has_every_finding(study):
    *_, page = study
    columns = page.tables["findings"]["columns"][0]
    rows = [dict(zip(columns, row)) for row in page.tables["findings"]["rows"]]
    assert len(rows) == 9 and {r["verdict"] for r in rows} <= {HOLDS, FAILS, PARTLY, UNCHECKED}
    by_claim = {r["finding (article)"]: r for r in rows}
    assert by_claim["Smaller β gives a lower reconstruction loss"]["evidence"].endswith("/2 datasets")
    assert "CelebA" in by_claim["CelebA β = 10 is best on every metric"]["proxy (ours)"]  # shapes stands for CelebA
    assert "highest PSNR and SSIM, lowest FID" in by_claim["CelebA β = 10 is best on every metric"]["proxy (ours)"]
    assert "(mean KL > 0.01 nats)" in by_claim["Larger β gives cleaner traversals, showing mostly the dominant colours"][
        "proxy (ours)"]
    assert by_claim["Batik is the worst dataset"]["proxy (ours)"].startswith("general form")
    assert by_claim["Batch normalisation and a 128-dim latent are suspected of hurting batik"]["verdict"] == UNCHECKED


# ---------------------------------------------------------------------------------- findings, synthetic

def _cell(dataset, beta, recon=None, state="finished", group="grid", article=None, **scores):
    values = {"objective.beta": beta} if not isinstance(beta, dict) else beta
    return CellResult(name=f"{dataset}_{values}", dataset=dataset, values=values, state=state, group=group,
                      article=article, headline=Headline(**scores),
                      final_val=None if recon is None else {"recon": recon, "kl": 1.0})


def test_a_cells_values_are_headline_scores_or_final_validation_terms():
    cell = _cell("a", 10, 0.5, ssim_val=0.3, fid=12.0)
    assert (cell.value("ssim_val"), cell.value("fid"), cell.value("mig"), cell.value("recon")) == (0.3, 12.0, None, 0.5)
    for unknown in ("ssim", "psnr", "kid_mean"):
        with pytest.raises(KeyError, match="ssim_val"):
            cell.value(unknown)
    assert [s.key for s in RANKED] == ["psnr_val", "ssim_val", "fid"]


@pytest.mark.parametrize("recons, verdict, evidence", [
    ({"a": (0.1, 0.2), "b": (0.3, 0.4)}, HOLDS, "2/2 datasets"),
    ({"a": (0.2, 0.1), "b": (0.4, 0.3)}, FAILS, "0/2 datasets"),
    ({"a": (0.1, 0.2), "b": (0.4, 0.3), "c": (0.1, 0.5)}, PARTLY, "2/3 datasets"),
    ({"a": (0.2, 0.2)}, FAILS, "0/1 datasets"),  # equal is not lower
])
def test_smaller_beta_lower_reconstruction_verdicts(recons, verdict, evidence):
    results = [_cell(d, beta, r) for d, pair in recons.items() for beta, r in zip((10, 100), pair)]
    finding = smaller_beta_lower_reconstruction(results)
    assert (finding.verdict, finding.evidence) == (verdict, evidence)
    assert len(finding.detail) == len(recons)


def test_beta_is_compared_only_among_finished_grid_cells_that_differ_only_in_beta():
    results = [_cell("a", 10, 0.1), _cell("a", 100, 0.05, state="failed"),  # a: one finished β → skipped
               _cell("b", 10, 0.1), _cell("b", 1, 0.5, group="extra"),  # extra cells are not compared
               _cell("c", {"objective.beta": 10, "model.latent_dim": 8}, 0.1),
               _cell("c", {"objective.beta": 100, "model.latent_dim": 16}, 0.2)]  # differ in two keys
    finding = smaller_beta_lower_reconstruction(results)
    assert finding.verdict == UNCHECKED and "two or more values" in finding.evidence
    results += [_cell("c", {"objective.beta": 100, "model.latent_dim": 8}, 0.3)]
    finding = smaller_beta_lower_reconstruction(results)
    assert (finding.verdict, finding.evidence) == (HOLDS, "1/1 datasets") and "latent_dim" in finding.detail[0]


def test_checks_without_the_data_they_need_are_not_checked():
    results = [_cell("a", 10, 0.1, ssim_val=0.3), _cell("a", 100, 0.2, ssim_val=0.2)]
    assert architecture_hurts_batik(results, ["objective.beta"]).verdict == UNCHECKED
    assert "no grid over model.batch_norm" in architecture_hurts_batik(results, ["objective.beta"]).evidence
    assert disentangle_poorly(results).verdict == UNCHECKED
    assert larger_beta_lower_fid(results).verdict == UNCHECKED  # no cell has an FID
    others = [_cell("b", 10, ssim_val=0.1), _cell("batik", 10, state="failed", article="batik")]
    assert batik_worst(results + others).verdict == UNCHECKED  # batik is in the study but has no results
    assert batik_worst(results + others[:1]).verdict == HOLDS  # general form: b is worst on SSIM, the only metric
    assert all(f.verdict in (HOLDS, FAILS, PARTLY, UNCHECKED) for f in check_findings(results, ["objective.beta"]))


def test_article_specific_claims_use_the_datasets_that_reproduce_them():
    results = [_cell("faces", 10, article="celeba", ssim_val=0.3, psnr_val=20.0, fid=10.0),
               _cell("faces", 100, article="celeba", ssim_val=0.2, psnr_val=19.0, fid=12.0),
               _cell("photos", 10, article="cars", ssim_val=0.1, psnr_val=18.0, fid=30.0),
               _cell("photos", 100, article="cars", ssim_val=0.1, psnr_val=17.0, fid=20.0),
               _cell("shapes", 10, fid=1.0), _cell("shapes", 100, fid=2.0)]  # not an article dataset
    best = celeba_best(results)
    assert best.verdict == PARTLY and best.evidence.endswith("2/3 metrics")  # shapes has the lowest FID
    fid = larger_beta_lower_fid(results)
    assert (fid.verdict, fid.evidence) == (HOLDS, "1/1 datasets")  # photos (cars) only
    general = larger_beta_lower_fid([r for r in results if r.article is None])
    assert general.verdict == FAILS and general.proxy.startswith("general form")


def test_disentangle_poorly_compares_cars_and_batik_with_the_other_datasets():
    results = [_cell("photos", 10, article="cars", mig=0.05), _cell("toys", 10, mig=0.2)]
    assert disentangle_poorly(results).verdict == HOLDS
    assert disentangle_poorly([results[1]]).verdict == UNCHECKED


def test_batch_norm_grid_is_checked_on_batik():
    results = [_cell("batik", {"model.batch_norm": flag}, article="batik", ssim_val=ssim)
               for flag, ssim in ((False, 0.2), (True, 0.1))]
    finding = architecture_hurts_batik(results, ["model.batch_norm"])
    assert (finding.verdict, finding.evidence) == (HOLDS, "1/1 datasets")


# ---------------------------------------------------------------------------------------- article numbers

def _config(**objective):
    return validate_config({"data": {"name": "dsprites"},
                            "objective": {"name": "beta", "reconstruction": "mse_mean", "kld_weight": 0.0025,
                                          **objective}})


def test_article_numbers_match_dataset_objective_beta_and_kld_weight():
    found = article_numbers("celeba", _config(beta=10))
    assert (found.table, found.ssim, found.psnr, found.n, found.fid, found.fid_samples) == (
        "2", 0.293, 29.668, 2036, 138.452, 2400)
    assert article_numbers("batik", _config(beta=1, kld_weight=0.000001)).ssim == -0.018
    assert article_numbers("batik", _config(beta=1)).psnr == 27.930
    assert article_numbers(None, _config(beta=10)) is None
    assert article_numbers("celeba", _config(beta=4)) is None
    assert article_numbers("celeba", _config(beta=10, kld_weight=0.01)) is None
    assert article_numbers("celeba", _config(beta=10, reconstruction="bernoulli")) is None
    assert article_numbers("celeba", None) is None


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", 'no "cells" object'),
    ('{"name": "x"}', 'no "cells" object'),
    ('{"cells": {"a": {"name": "a", "dataset": "d"}}}', "cell 'a' lacks run"),
])
def test_report_on_a_corrupt_study_json_is_a_one_line_error(tmp_path, capsys, text, message):
    from betavae.cli import main

    (tmp_path / "study.json").write_text(text)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "study.json" in err and message in err
    assert not (tmp_path / "report.html").exists()


def test_report_with_a_finished_cells_folder_deleted_shows_it_not_evaluated(tmp_path):
    entry = {"name": "a_beta1", "dataset": "a", "label": "a", "group": "grid", "values": {"objective.beta": 1},
             "run": "cells/a_beta1", "state": "finished"}  # its folder deleted after the study ran
    (tmp_path / "study.json").write_text(json.dumps({"name": "gone", "grid_keys": ["objective.beta"],
                                                     "cells": {"a_beta1": entry}}))
    page = Page(write_report(tmp_path).read_text())
    assert page.tables["table2_reconstruction"]["rows"][0][3] == "not evaluated"
