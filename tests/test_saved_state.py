"""A resume refuses a study whose newest saved Tune state a killed copy left empty, naming the file."""
import pytest

from petseg.errors import StudyError
from petseg.tune.saved_state import check_saved_state, empty_state_files
from petseg.tune.storage import Location


def test_the_newest_empty_state_file_is_named_and_refused(tmp_path):
    (tmp_path / "experiment_state-2026-01-01_10-00-00.json").write_text("{}")
    (tmp_path / "search_gen_state-2026-01-01_09-00-00.json").write_bytes(b"x")
    (tmp_path / "search_gen_state-2026-01-01_10-00-00.json").write_bytes(b"")  # the newest: what Tune loads
    (tmp_path / "searcher-state-2026-01-01_10-00-00.pkl").write_bytes(b"x")
    experiment = Location.at(tmp_path)
    assert empty_state_files(experiment) == [str(tmp_path / "search_gen_state-2026-01-01_10-00-00.json")]
    with pytest.raises(StudyError, match="search_gen_state-2026-01-01_10-00-00.json is empty") as refused:
        check_saved_state(experiment, "study")
    assert "another --name" in str(refused.value)


def test_an_older_empty_file_or_intact_state_is_resumed(tmp_path):
    (tmp_path / "search_gen_state-2026-01-01_09-00-00.json").write_bytes(b"")  # superseded by a newer one
    (tmp_path / "search_gen_state-2026-01-01_10-00-00.json").write_bytes(b"x")
    (tmp_path / "tuner.pkl").write_bytes(b"x")
    assert empty_state_files(Location.at(tmp_path)) == []
    check_saved_state(Location.at(tmp_path), "study")
    (tmp_path / "tuner.pkl").write_bytes(b"")
    assert empty_state_files(Location.at(tmp_path)) == [str(tmp_path / "tuner.pkl")]
