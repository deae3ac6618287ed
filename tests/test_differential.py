"""The per-sample differential: confidence intervals against published tables, samples of cells, live
relabelling, and the edge cases (empty sample, one class, cells without a prediction)."""

import pytest
from report_helpers import make_project

from cellsearch_gui.core.classify.differential import (
    CellCall,
    differential,
    exact_interval,
    interval,
    sample_differential,
    wilson_interval,
)
from cellsearch_gui.core.export.samples import (
    UNASSIGNED,
    SampleNameError,
    assign_samples,
    clean_sample_name,
    set_sample_name,
)
from cellsearch_gui.core.export.table import table_from_project
from cellsearch_gui.core.project import open_project
from cellsearch_gui.core.types import Cell

# Newcombe (1998), Statistics in Medicine 17:857-872, Table II: method 3 (Wilson score, no continuity
# correction) and method 5 (Clopper-Pearson exact), to 4 decimals.
NEWCOMBE = [((81, 263), (0.2553, 0.3662), (0.2527, 0.3676)),
            ((15, 148), (0.0624, 0.1605), (0.0578, 0.1617)),
            ((0, 20), (0.0000, 0.1611), (0.0000, 0.1684)),
            ((1, 29), (0.0061, 0.1718), (0.0009, 0.1776))]
# Rümke's table of 95 % limits for 100- and 200-cell manual differentials (CLSI H20-A2), whole percent
RUMKE = {100: {5: (2, 11), 10: (5, 18), 20: (13, 29), 50: (40, 60)},
         200: {5: (2, 9), 10: (6, 15), 20: (15, 26), 50: (43, 57)}}


@pytest.mark.parametrize("counts, wilson, exact", NEWCOMBE)
def test_intervals_match_newcombes_table(counts, wilson, exact):
    assert wilson_interval(*counts) == pytest.approx(wilson, abs=5e-5)
    assert exact_interval(*counts) == pytest.approx(exact, abs=5e-5)


@pytest.mark.parametrize("cells", [100, 200])
def test_exact_interval_matches_the_haematology_table_for_manual_counts(cells):
    for percent, (low, high) in RUMKE[cells].items():
        lo, hi = exact_interval(percent * cells // 100, cells)
        assert (round(100 * lo), round(100 * hi)) == (low, high), percent


def test_interval_of_an_empty_sample_and_an_unknown_method():
    assert wilson_interval(0, 0) == exact_interval(0, 0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="unknown interval"):
        interval(1, 2, "bootstrap")


def test_one_sample_counts_uncertain_reviewed_corrected_and_unclassified():
    calls = [CellCall("s", "neutrophil", 0.1, None), CellCall("s", "neutrophil", 0.8, None),  # uncertain
             CellCall("s", "neutrophil", 0.9, "lymphocyte"),  # reviewed and corrected, no longer uncertain
             CellCall("s", "lymphocyte", 0.0, "lymphocyte"),  # reviewed, agreed
             CellCall("s", None, None, None)]  # no prediction
    d = sample_differential("s", calls, ["lymphocyte", "neutrophil"], threshold=0.3)
    assert (d.counted, d.uncertain, d.reviewed, d.corrected, d.unclassified) == (4, 1, 2, 1, 1)
    assert [(c.name, c.count, c.percent) for c in d.classes] == [("lymphocyte", 2, 50.0), ("neutrophil", 2, 50.0)]
    assert any("1 cell(s) without a prediction are not counted" in n for n in d.notes)


def test_edge_cases_give_a_clear_entry():
    classes = ["lymphocyte", "neutrophil"]
    diffs = differential([CellCall("one class", "neutrophil", 0.0, None), CellCall("none", None, None, None)],
                         classes, 0.3, samples=["empty", "one class", "none"])
    empty, one, none = diffs
    assert empty.sample == "empty" and empty.counted == 0 and empty.notes[0] == "no cells in this sample"
    assert all(c.count == 0 and c.percent == 0 and (c.low, c.high) == (0, 0) for c in empty.classes)
    assert one.count_of("neutrophil") == 1 and "every counted cell is neutrophil" in one.notes
    assert none.counted == 0 and none.unclassified == 1 and "no cell of this sample has a prediction" in none.notes[0]


def test_cells_belong_to_the_dropped_folder_or_a_named_group(tmp_path):
    a, b = tmp_path / "slide A", tmp_path / "slide B"
    cells = [Cell("1", str(a / "crop1.png"), str(a / "f1.png")),
             Cell("2", str(tmp_path / "seg" / "c.png"), str(b / "sub" / "f2.png")),  # a field deeper inside
             Cell("3", str(a / "seg" / "c.png"), str(tmp_path / "elsewhere.png")),  # a cells.csv folder: by crop
             Cell("4", str(tmp_path / "x.png"), str(tmp_path / "x.png"))]
    assert assign_samples(cells, [str(a), str(b)]) == ["slide A", "slide B", "slide A", UNASSIGNED]
    named = {str(a): "patient 7", str(b): "patient 7"}
    assert assign_samples(cells, [str(a), str(b)], named)[:3] == ["patient 7"] * 3
    assert assign_samples(cells[:1], [str(a / "crop1.png")]) == ["slide A"]  # a dropped file: its folder


def test_sample_names_are_checked(tmp_path):
    assert clean_sample_name("  patient   7 ") == "patient 7"
    assert clean_sample_name("../../etc/passwd") == "../../etc/passwd"  # kept as text; files use safe names
    for bad in ("", "   ", "a\x00b", "x" * 300):
        with pytest.raises(SampleNameError):
            clean_sample_name(bad)


def test_a_relabel_changes_the_differential(tmp_path):
    folder, cells = make_project(tmp_path)
    with open_project(folder) as store:
        before = {d.sample: d for d in table_from_project(store).differential()}
        assert before["slide_A"].count_of("lymphocyte") == 2 and before["slide_A"].uncertain == 1
        store.set_labels({cells[1].cell_id: "neutrophil"})  # the uncertain lymphocyte was a neutrophil
        after = {d.sample: d for d in table_from_project(store).differential()}
    a = after["slide_A"]
    assert (a.count_of("lymphocyte"), a.count_of("neutrophil")) == (1, 2)
    assert (a.uncertain, a.reviewed, a.corrected) == (0, 1, 1)
    assert after["slide_B"] == before["slide_B"]


def test_named_samples_and_an_empty_sample_in_a_project(tmp_path):
    folder, cells = make_project(tmp_path)
    with open_project(folder) as store:
        set_sample_name(store, tmp_path / "slide_B", "patient/../7")
        store.add_source("query", tmp_path / "slide_C")  # dropped, but no cell found in it
        diffs = table_from_project(store).differential()
    assert [d.sample for d in diffs] == ["slide_A", "patient/../7", "slide_C"]
    assert diffs[1].counted == 2 and diffs[2].counted == 0 and diffs[2].notes == ["no cells in this sample"]


def test_the_classifiers_own_uncertain_answer_decides_when_it_is_known():
    calls = [CellCall("s", "a", 0.0, None, flagged=True), CellCall("s", "a", 1.0, None, flagged=False),
             CellCall("s", "a", 1.0, None), CellCall("s", "a", 1.0, "a", flagged=True)]
    (result,) = differential(calls, ["a"], 0.3)
    assert result.uncertain == 2  # the flagged one, and the old run's high entropy; never a labelled cell
