"""Where the tokens land in a codebook: the measure (by hand), the untrained quantizer's profile (its
outer codes starve in many dimensions), a trained run's measurement, and the page's table and sentence."""

import json

import pytest
import torch
from scipy import stats as scipy_stats

from helpers import tiny_tokenizer
from simvq.experiments.analysis import codebook_geometry, run_geometry
from simvq.experiments.report import aggregate
from simvq.experiments.report.geometry import geometry_figure, geometry_section
from simvq.experiments.stats import p_text
from simvq.metrics.coverage import gaussian_reference
from simvq.runs.model import load_run_model


def test_geometry_by_hand_on_a_line():
    """Ten codes at 1..10 along one axis (mean 5.5): the groups of two by distance from the mean are
    {5, 6}, {4, 7}, ..., {1, 10}. Tokens at twice the codes' offsets spread twice as wide."""
    codebook = torch.zeros(10, 3)
    codebook[:, 0] = torch.arange(1.0, 11.0)
    counts = torch.tensor([4, 0, 0, 0, 1, 0, 0, 0, 0, 5])  # codes 1, 5 and 10
    found = codebook_geometry(codebook, counts, bins=5)
    assert found["usage_by_radius"] == [0.5, 0.0, 0.0, 0.0, 1.0]  # {5, 6}: code 5 hit; {1, 10}: both
    assert found["token_share_by_radius"] == pytest.approx([0.1, 0.0, 0.0, 0.0, 0.9])
    assert found["effective_rank"] == pytest.approx(1.0)  # centred codes on one line
    tokens = codebook.clone()
    tokens[:, 0] = 5.5 + 2 * (codebook[:, 0] - 5.5)
    assert codebook_geometry(codebook, counts, tokens, bins=5)["spread_ratio"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="bins"):
        codebook_geometry(codebook, counts, bins=11)
    with pytest.raises(ValueError, match="counts"):
        codebook_geometry(codebook, counts[:5])
    with pytest.raises(ValueError, match="counted token"):
        codebook_geometry(codebook, torch.zeros(10, dtype=torch.long))


def test_an_untrained_quantizer_in_many_dimensions_starves_its_outer_codes():
    """Gaussian codes and tokens in d = 64: the codes near the centre are near neighbours in every
    direction and take far more than their share; the outermost tenth is hit least. In d = 2 the
    profile is nearly flat: the effect is the dimension's, not the measure's."""
    many = codebook_geometry(*gaussian_reference(1024, 16 * 1024, 64))
    assert many["usage_by_radius"][-1] < many["usage_by_radius"][0] - 0.2
    assert many["token_share_by_radius"][0] > 3 * many["token_share_by_radius"][-1]
    few = codebook_geometry(*gaussian_reference(1024, 16 * 1024, 2))
    assert max(few["token_share_by_radius"]) < 2.5 * min(few["token_share_by_radius"])


def test_a_run_is_measured_from_its_model_and_test_tokens(tmp_path):
    run = tiny_tokenizer(tmp_path, "quantizer.name=vq", "quantizer.codebook_size=16")
    model, config, _ = load_run_model(run)
    counts = torch.arange(16)
    found = run_geometry(run, counts)
    direct = codebook_geometry(model.quantizer.codebook(), counts)
    assert found["usage_by_radius"] == direct["usage_by_radius"] and found["spread_ratio"] > 0
    (tmp_path / "fsq").mkdir()
    fsq = tiny_tokenizer(tmp_path / "fsq", "quantizer.name=fsq", "quantizer.codebook_size=16")
    assert run_geometry(fsq, counts) is None  # an implicit grid has no codebook to measure


def test_the_page_says_which_end_of_simvqs_codebook_goes_unused(tmp_path):
    rows = [{"variant": "main", "method": m, "codebook_size": "65536", "seed": str(s), "usage": "0.9"}
            for m in ("simvq", "vq") for s in (0, 1)]
    reference = {"usage_by_radius": [1.0] * 9 + [0.44], "token_share_by_radius": [0.4] + [0.066] * 9, "effective_rank": 60.0,
                 "codes": 8192, "tokens": 52 * 8192}
    geometry = {f"main/simvq/K65536/seed{s}": {"usage_by_radius": [inner] + [0.9] * 8 + [outer], "effective_rank": 10.0,
                                               "token_share_by_radius": [0.01] * 9 + [0.91], "spread_ratio": 1.7, "reference": reference}
                for s, inner, outer in ((0, 0.60, 0.98), (1, 0.64, 0.96))}
    lines = geometry_section(aggregate(rows), geometry)
    table = [line for line in lines if line.startswith("| main | simvq |")]
    assert table == ["| main | simvq | 65,536 | 2 | 62.0 ± 2.8 (2) | 97.0 ± 1.4 (2) | 91.0 ± 0.0 (2) | 1.70 ± 0.00 (2) | 10.0 ± 0.0 (2) "
                     "| 100.0 / 44.0, 6.6 |"]
    assert not any(line.startswith("| main | vq |") for line in lines)  # vq's rows were not measured
    note = next(line for line in lines if line.startswith("- SimVQ at K=65,536"))
    welch = scipy_stats.ttest_ind([0.60, 0.64], [0.98, 0.96], equal_var=False).pvalue  # inner against outer, over the seeds
    assert note == ("- SimVQ at K=65,536 (2 seeds): its unused codes lie toward the codebook's centre (usage 62.0% in the innermost "
                    f"tenth of the codes against 97.0% in the outermost; {p_text(welch)}, Welch, 2 seeds). Its tokens spread 1.70× as wide "
                    "as its codes, and the outermost tenth of the codes takes most of them (91.0%); the untrained quantizer at the same "
                    "N/K uses 100.0% / 44.0% of those tenths, its outermost taking 6.6% of the tokens.")
    # one run: Fisher's exact test on the tenths' codes; nearly full at both ends: no end to place
    one = {"main/simvq/K65536/seed0": geometry["main/simvq/K65536/seed0"]}
    # 65,536 codes in tenths: the innermost holds 6,554 (tensor_split gives the first 6 one more), the outermost 6,553
    fisher = scipy_stats.fisher_exact([[3932, 6422], [6554 - 3932, 6553 - 6422]]).pvalue  # 60% of 6,554 and 98% of 6,553 codes
    note = next(line for line in geometry_section(aggregate(rows[:1]), one) if line.startswith("- SimVQ"))
    assert "(1 seed): in this one run, unused codes lie toward the codebook's centre" in note
    assert (f"against 98.0% in the outermost; {p_text(fisher)}, Fisher's exact test on the two tenths' 6,554 and 6,553 codes); "
            "that describes this codebook, not the method across seeds.") in note
    full = {key: {**entry, "usage_by_radius": [0.995] * 9 + [1.0]} for key, entry in geometry.items()}
    note = next(line for line in geometry_section(aggregate(rows), full) if line.startswith("- SimVQ"))
    assert "it uses nearly every code at both ends (usage 99.5% in the innermost tenth" in note
    assert geometry_section(aggregate(rows), {}) == []
    picture = geometry_figure(aggregate(rows), geometry, tmp_path / "geometry.png")
    assert picture.stat().st_size > 0 and geometry_figure(aggregate(rows), {}, tmp_path / "none.png") is None
    assert geometry_section(aggregate(rows), geometry, "figures/geometry.png")[-2] == (
        "![where SimVQ's tokens land, by tenth of the codes](figures/geometry.png)")
    json.dumps(geometry)  # the file's form
