"""One study per results folder, replaced whole; a partial study's report says what did not run."""
import json

import pandas as pd
import pytest

from petseg.errors import StudyError
from petseg.report.analysis import missing_work, partial_lines
from petseg.report.results_folder import check_results_folder, read_marker, replacing, write_marker
from petseg.tune.config import resolve_config


def write_study(folder, study, files):
    with replacing(folder, study) as staging:
        for name, text in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text)
        write_marker(staging, study, partial=False)


def test_a_new_report_replaces_the_old_one_whole(tmp_path):
    folder = tmp_path / "results" / "smoke"
    write_study(folder, "/ray/smoke", {"report.md": "old", "checkpoints/fcn.pt": "old head"})
    write_study(folder, "/ray/smoke", {"report.md": "new", "checkpoints/deeplab.pt": "new head"})
    assert (folder / "report.md").read_text() == "new"
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["deeplab.pt"]  # no stale fcn.pt
    assert read_marker(folder) == {"study": "/ray/smoke", "partial": False}
    assert sorted(p.name for p in folder.parent.iterdir()) == ["smoke"]  # no staging folder left behind


def test_a_report_that_fails_halfway_leaves_the_previous_one_intact(tmp_path):
    folder = tmp_path / "smoke"
    write_study(folder, "/ray/smoke", {"report.md": "complete"})
    with pytest.raises(OSError, match="truncated state.pt"):
        with replacing(folder, "/ray/smoke") as staging:
            (staging / "report.md").write_text("half")
            raise OSError("truncated state.pt")
    assert (folder / "report.md").read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke"]


def test_another_studys_results_are_refused_unless_overwrite_which_clears_them(tmp_path):
    folder = tmp_path / "smoke"
    write_study(folder, "/ray/first", {"report.md": "first", "checkpoints/fcn.pt": "first head"})
    with pytest.raises(StudyError, match=r"holds the results of another study \(/ray/first\); pass --overwrite"):
        check_results_folder(folder, "/ray/second")
    with pytest.raises(StudyError):
        write_study(folder, "/ray/second", {"report.md": "second"})
    assert (folder / "report.md").read_text() == "first"
    with replacing(folder, "/ray/second", overwrite=True) as staging:
        (staging / "report.md").write_text("second")
        write_marker(staging, "/ray/second")
    assert not (folder / "checkpoints").exists() and (folder / "report.md").read_text() == "second"


def test_a_folder_of_other_files_is_refused_and_an_empty_one_is_taken(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not petseg's")
    with pytest.raises(StudyError, match="holds files that are not a petseg study's results"):
        check_results_folder(tmp_path / "mine", "/ray/smoke")
    (tmp_path / "empty").mkdir()
    check_results_folder(tmp_path / "empty", "/ray/smoke")
    check_results_folder(tmp_path / "absent", "/ray/smoke")


def records(*rows):
    return pd.DataFrame([{"trial_id": t, "variant": v, "ended_by": e} for t, v, e in rows])


def test_an_interrupted_study_is_partial_and_says_what_did_not_run():
    config = resolve_config("smoke", overrides={"variants": ["fcn_resnet50", "denseaspp_voc"]})  # 2 x 2 planned
    found = records(("a", "fcn_resnet50", "max epochs"), ("b", "fcn_resnet50", "ASHA"),
                    ("c", "denseaspp_voc", "running"))
    gaps = missing_work(config, found, {"fcn_resnet50": object()})
    assert gaps == {"partial": True, "trials_not_started": 1, "trials_unfinished": ["c"],
                    "variants_missing": ["denseaspp_voc"], "trials_scored": 1, "trials_lost": [],
                    "trials_recovered": {}}
    text = " ".join(partial_lines(gaps, {"fcn_resnet50": "FCN", "denseaspp_voc": "DenseASPP1"}))
    assert "1 planned trial(s) never started" in text and "1 trial(s) did not finish (c)" in text
    assert "no scored trial for DenseASPP1" in text and "--resume" in text
    json.dumps(gaps)  # kept in the results folder's marker


def test_a_trial_whose_results_are_lost_makes_the_report_partial_and_a_recovered_one_is_named():
    config = resolve_config("smoke", overrides={"variants": ["fcn_resnet50"]})
    found = records(("a", "fcn_resnet50", "max epochs"), ("b", "fcn_resnet50", "max epochs"))
    found["history"] = ["lost", "recovered from progress.csv"]
    gaps = missing_work(config, found, {"fcn_resnet50": object()})
    assert gaps["partial"] and gaps["trials_lost"] == ["a"]
    text = " ".join(partial_lines(gaps, {"fcn_resnet50": "FCN"}))
    assert "1 trial(s) reported epochs whose results no file holds any more (a:" in text
    assert "trial b (recovered from progress.csv)" in text


def test_a_study_that_ran_everything_is_not_partial():
    config = resolve_config("smoke", overrides={"variants": ["fcn_resnet50"]})
    found = records(("a", "fcn_resnet50", "max epochs"), ("b", "fcn_resnet50", "error"))
    gaps = missing_work(config, found, {"fcn_resnet50": object()})
    assert not gaps["partial"] and partial_lines(gaps, {}) == []
