"""Banking77 files: fetched when missing, verified by SHA-256, clear when offline."""

from __future__ import annotations

import shutil

import pytest

from csft.data.download import BANKING77_SHA256, fetch_banking77, fetch_files, sha256_of
from csft.errors import DataError


def test_missing_files_are_downloaded_and_verified(tmp_path, data_dir):
    # The real download path (urllib), served from a file:// mirror of the upstream folder.
    mirror = (data_dir / "banking77").as_uri()
    target = tmp_path / "banking77"
    fetch_banking77(target, base_url=mirror)
    for name, digest in BANKING77_SHA256.items():
        assert sha256_of(target / name) == digest
    assert not list(target.glob(".*part"))


def test_a_corrupt_download_is_rejected_and_nothing_written(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "train.csv").write_text("text,category\nhello,greeting\n")
    target = tmp_path / "data"
    with pytest.raises(DataError, match="SHA-256") as err:
        fetch_files(target, {"train.csv": "0" * 64}, mirror.as_uri())
    assert "nothing was written" in str(err.value)
    assert list(target.iterdir()) == []


def test_offline_and_missing_says_where_to_put_the_files(tmp_path):
    target = tmp_path / "banking77"
    with pytest.raises(DataError) as err:
        fetch_banking77(target, base_url="http://127.0.0.1:9/banking_data")
    message = str(err.value)
    assert "train.csv, test.csv, categories.json" in message
    assert str(target) in message and "CSFT_DATA_DIR" in message


def test_files_already_present_are_left_alone(tmp_path, data_dir):
    target = tmp_path / "banking77"
    shutil.copytree(data_dir / "banking77", target)
    (target / "train.csv").write_text("my own edited copy\n")
    fetch_banking77(target, base_url="http://127.0.0.1:9/unused")  # no download attempted
    assert (target / "train.csv").read_text() == "my own edited copy\n"
