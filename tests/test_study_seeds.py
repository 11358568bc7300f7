"""A study that sweeps train.seed: per-setting medians and spreads, the seeds figure, UDR across
seeds, UDR against the supervised scores, and findings on medians."""
import csv
import io
import json

import pytest

from betavae.evaluation.headline import SCORES, Headline
from betavae.evaluation.run_eval import EvalOptions, evaluate_run
from betavae.study.findings import HOLDS, MEDIANS, PARTLY, CellResult, by_setting, check_findings, smaller_beta_lower_reconstruction
from betavae.study.folder import write_state
from betavae.study.report import disentanglement_table, seeds_table, spread, summarised_scores, udr_correlation_table
from betavae.study.udr import ONE_SEED, StudyUDR, udr_correlations

from test_study_report import Page, build_study

SEEDED = {
    "name": "seeded",
    "base": {"data": {"num_images": 256, "image_size": 32}, "model": {"preset": "tiny"},
             "train": {"max_steps": 8, "batch_size": 16, "lr": 0.003, "progress": False, "checkpoint_every": 4,
                       "val_every": 4},
             "objective": {"name": "beta", "reconstruction": "bernoulli"}},
    "datasets": {"dsprites": {"set": {"data.name": "dsprites"}}},
    "grid": {"objective.beta": [1, 4], "train.seed": [0, 1]},
    "extra": [{"dataset": "dsprites", "set": {"objective.beta": 16}}],  # one seed
}


def _cell(beta, seed=None, state="finished", **scores):
    values = {"objective.beta": beta, **({"train.seed": seed} if seed is not None else {})}
    final = {"recon": scores.pop("recon"), "kl": 1.0} if "recon" in scores else None
    return CellResult(name=f"a_beta{beta}_seed{seed}", dataset="a", values=values, state=state,
                      headline=Headline(**scores), final_val=final)


# ------------------------------------------------------------------------------------------ synthetic

def test_spread_is_median_iqr_and_range_or_the_single_value():
    mig = SCORES["mig"]
    assert spread(mig, [0.1, 0.2, 0.4]) == "0.200 (IQR 0.150–0.300; range 0.100–0.400)"
    assert spread(mig, [0.25]) == "0.250"
    assert spread(mig, []) == "—"
    assert spread(SCORES["active_dims"], [3, 4]) == "3.5 (IQR 3.25–3.75; range 3–4)"
    assert spread(SCORES["active_dims"], [10, 10, 10]) == "10 (every seed)"


def test_seeds_table_has_one_row_per_setting_with_every_registry_score():
    results = [_cell(1, 0, mig=0.1, ssim_val=0.5, active_dims=3), _cell(1, 1, mig=0.3, ssim_val=0.7, active_dims=5),
               _cell(1, 2, state="failed"), _cell(4, 0, mig=0.2, ssim_val=0.4, active_dims=2)]
    found = StudyUDR(scores={"a_beta1_seed0": 0.5, "a_beta1_seed1": 0.7}, reasons={"a_beta4": ONE_SEED})
    table = seeds_table(results, found)
    columns = table.columns
    assert columns[:3] == ["dataset", "settings", "seeds"] and columns[-1] == "UDR"
    assert columns[3:-1] == [s.label for s in summarised_scores(results)]
    assert {"SSIM", "MIG", "active dims"} <= set(columns)  # image, factor and latent scores, from the registry
    first, second = (dict(zip(columns, row)) for row in table.rows)
    assert (first["settings"], first["seeds"]) == ("β=1", "2 seeds (1 not finished)")
    assert first["MIG"] == "0.200 (IQR 0.150–0.250; range 0.100–0.300)"
    assert first["UDR"] == "0.600 (IQR 0.550–0.650; range 0.500–0.700)"
    assert (second["seeds"], second["MIG"], second["UDR"]) == ("1 seed", "0.200", "—")
    assert [s.seeds for s in by_setting(results)] == [[0, 1], [0]]


def test_findings_compare_beta_by_per_setting_medians():
    # per seed β=1 → β=4 the reconstruction rises for seed 0 only; the medians (0.2 → 0.25) rise
    results = [_cell(1, s, recon=r) for s, r in zip((0, 1, 2), (0.1, 0.5, 0.2))]
    results += [_cell(4, s, recon=r) for s, r in zip((0, 1, 2), (0.3, 0.25, 0.01))]
    assert smaller_beta_lower_reconstruction(results).verdict == PARTLY  # seed by seed: 1 of 3
    finding = check_findings(results, ["objective.beta", "train.seed"])[0]
    assert (finding.verdict, finding.evidence) == (HOLDS, "1/1 datasets")
    assert finding.proxy.endswith(MEDIANS) and "0.2" in finding.detail[0] and "0.25" in finding.detail[0]


def test_udr_is_correlated_with_each_supervised_score_over_three_or_more_models():
    results = [_cell(1, s, mig=m, sap=0.1) for s, m in zip(range(4), (0.1, 0.2, 0.3, 0.4))]
    found = StudyUDR(scores={r.name: u for r, u in zip(results, (0.2, 0.4, 0.5, 0.9))})
    rows = {score.key: (n, rho, note) for score, n, rho, note in udr_correlations(results, found, [SCORES["mig"],
                                                                                               SCORES["sap"],
                                                                                               SCORES["dci_completeness"]])}
    assert rows["mig"] == (4, pytest.approx(1.0), "")
    assert rows["sap"][1] is None and rows["sap"][2] == "constant over the models"
    assert rows["dci_completeness"][:2] == (0, None) and "≥ 3" in rows["dci_completeness"][2]
    table = udr_correlation_table(results, found)
    assert dict(zip(table.columns, table.rows[0]))["Spearman ρ with UDR"] == "+1.000"
    assert disentanglement_table(results, found).columns[-1] == "UDR"
    assert "UDR" not in disentanglement_table(results).columns  # a study without seeds: as before


# ------------------------------------------------------------------------------------- a real study

@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """2 β × 2 seeds plus a one-seed extra cell, trained and evaluated (no FID, no factor scores) here."""
    paths, state = build_study(tmp_path_factory.mktemp("seeded"), SEEDED, lambda cell, run_dir: evaluate_run(
        run_dir, EvalOptions(fid=False, disentanglement=False, progress=False)))
    write_state(paths, state)
    from betavae.study.report import write_report

    report = write_report(paths.root)
    return paths, Page(report.read_text())


def _table(page, name):
    columns, *_ = page.tables[name]["columns"]
    return [dict(zip(columns, row)) for row in page.tables[name]["rows"]]


def test_seeded_study_report_shows_medians_spreads_and_the_seed_figure(seeded):
    paths, page = seeded
    assert page.ids[:4] == ["overview", "table2", "table3", "table4"] and "seeds" in page.ids
    rows = _table(page, "seeds")
    assert [(r["settings"], r["seeds"]) for r in rows] == [("β=1", "2 seeds"), ("β=4", "2 seeds"), ("β=16", "1 seed")]
    assert "IQR" in rows[0]["SSIM"] and "range" in rows[0]["SSIM"] and "IQR" not in rows[2]["SSIM"]
    assert rows[2]["UDR"] == "—"
    assert rows[0]["UDR"].endswith("(every seed)")  # two seeds: one pair, both models get its score
    text = "".join(page.text)
    assert "1 seed" in text and ONE_SEED in text
    long = list(csv.DictReader(io.StringIO((paths.tables / "seeds_long.csv").read_text())))
    assert {r["score"] for r in long} >= {"ssim_val", "psnr_val", "active_dims", "udr"}
    assert len(page.images) == 1 + 1 + 1 + 3 * 5  # Fig. 9, Fig. 10, the seeds figure, 3 per cell


def test_seeded_study_report_has_udr_per_model_and_its_correlations(seeded):
    paths, page = seeded
    rows = _table(page, "disentanglement")
    by_cell = {(r["settings"]): r["UDR"] for r in rows}
    assert set(by_cell) == {"β=1, seed=0", "β=1, seed=1", "β=4, seed=0", "β=4, seed=1"}
    assert all(0.0 <= float(v) <= 1.0 for v in by_cell.values())
    udr = json.loads(paths.udr.read_text())
    assert set(udr["scores"]) == {"dsprites_beta1_seed0", "dsprites_beta1_seed1", "dsprites_beta4_seed0",
                                  "dsprites_beta4_seed1"}
    assert udr["reasons"] == {"dsprites_beta16": ONE_SEED} and udr["similarity"] == "spearman"
    assert udr["settings"]["dsprites_beta1"]["images"] > 0 and len(udr["settings"]["dsprites_beta1"]["pairwise"]) == 2
    correlations = _table(page, "udr_correlation")
    assert correlations and all(r["Spearman ρ with UDR"] == "—" for r in correlations)  # no factor scores here
    findings = _table(page, "findings")
    assert all(r["proxy (ours)"].endswith(MEDIANS) for r in findings)


def test_udr_of_one_seed_settings_and_of_failed_settings_needs_no_model():
    """A grid sweeping train.seed over one value, and a setting whose every seed failed: no UDR, no
    model loaded (their cells have no run folder), and the seeds table still has a row per setting."""
    from betavae.study.udr import study_udr

    results = [_cell(1, 0, mig=0.1), _cell(4, 0, mig=0.2), _cell(16, 0, state="failed"), _cell(16, 1, state="failed")]
    found = study_udr(results)
    assert found.scores == {} and found.details == {}
    assert found.reasons == {"a_beta1": ONE_SEED, "a_beta4": ONE_SEED}  # the failed setting: nothing to say
    rows = [dict(zip(table.columns, row)) for table in [seeds_table(results, found)] for row in table.rows]
    assert [(r["settings"], r["seeds"], r["UDR"]) for r in rows] == [
        ("β=1", "1 seed", "—"), ("β=4", "1 seed", "—"), ("β=16", "0 seeds (2 not finished)", "—")]
