"""A trial's reported rows read back from what survives in its folder: whole JSON lines, else progress.csv."""
import json

import pyarrow.fs

from petseg.tune.results import surviving_history

ROWS = [{"epoch": e, "val_weighted_iou": 0.5 + e / 10, "config": {"lr": 0.01}} for e in (1, 2, 3)]


def test_a_cut_result_json_keeps_its_whole_lines_and_a_longer_progress_csv_wins(tmp_path):
    lines = [json.dumps(row) for row in ROWS]
    (tmp_path / "result.json").write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])  # a kill mid-line
    (tmp_path / "progress.csv").write_text("epoch,val_weighted_iou\n1,0.6\n")
    frame, source = surviving_history(pyarrow.fs.LocalFileSystem(), str(tmp_path))
    assert source == "result.json" and frame["epoch"].tolist() == [1, 2] and "config/lr" in frame
    (tmp_path / "result.json").write_text("")
    (tmp_path / "progress.csv").write_text("epoch,val_weighted_iou\n1,0.6\n2,0.7\n3,0.8\n")
    frame, source = surviving_history(pyarrow.fs.LocalFileSystem(), str(tmp_path))
    assert source == "progress.csv" and frame["val_weighted_iou"].tolist() == [0.6, 0.7, 0.8]


def test_nothing_survives_when_both_files_are_empty_or_gone(tmp_path):
    (tmp_path / "result.json").write_bytes(b"\x00\x00\x00")
    frame, source = surviving_history(pyarrow.fs.LocalFileSystem(), str(tmp_path))
    assert source == "" and frame.empty
