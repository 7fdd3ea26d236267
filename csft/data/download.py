"""Fetch public data files once, verify them by SHA-256, and say where to put them if offline."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from csft.errors import DataError

BANKING77_URL = (
    "https://raw.githubusercontent.com/PolyAI-LDN/task-specific-datasets/master/banking_data"
)
BANKING77_SHA256 = {
    "train.csv": "b06e26ac675513959a63135f11b94ea7786ed02da65db93a5650d8838cbc664b",
    "test.csv": "d12d6e3bc4c3103966ae786dc435913c0c563dfa328f5a3646d0e62cfeeb474d",
    "categories.json": "53261da888122daf2d120d925458631d9619e15d82e56052e7a42e535ce32b63",
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_files(
    directory: str | Path,
    files: Mapping[str, str],
    base_url: str,
    timeout: float = 30.0,
) -> Path:
    """Make sure every file in `files` (name → SHA-256) is in `directory`, downloading the missing.

    Files already present are left alone (a user's own copy is never overwritten); a download
    is written to a temporary name and only moved into place once its hash matches.
    """
    directory = Path(directory)
    missing = [name for name in files if not (directory / name).is_file()]
    for name in missing:
        url = f"{base_url.rstrip('/')}/{name}"
        target = directory / name
        partial = target.with_name(f".{name}.{os.getpid()}.part")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(url, timeout=timeout) as response:
                partial.write_bytes(response.read())
        except OSError as err:
            partial.unlink(missing_ok=True)
            raise DataError(
                f"{target}: missing, and downloading it from {url} failed ({err}). "
                f"Put {', '.join(missing)} into {directory} (or point paths.data_dir / "
                f"CSFT_DATA_DIR at a folder that has them)."
            ) from None
        actual = sha256_of(partial)
        if actual != files[name]:
            partial.unlink()
            raise DataError(
                f"{url}: downloaded file has SHA-256 {actual}, expected {files[name]}; "
                f"nothing was written to {target}."
            )
        partial.replace(target)
    return directory


def fetch_banking77(directory: str | Path, base_url: str = BANKING77_URL) -> Path:
    """Banking77 (PolyAI, CC-BY-4.0): train.csv, test.csv, categories.json."""
    return fetch_files(directory, BANKING77_SHA256, base_url)
