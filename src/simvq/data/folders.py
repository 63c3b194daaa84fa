"""What folder-backed data sets (images, audio) share: the file list and a key naming it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path


def folder_files(root: Path, files: Sequence | None, lister: Callable[[Path], list], *, folder: str, nouns: str, suffixes) -> list:
    """``files`` as given, else what ``lister`` finds under ``root``; refuses a missing folder and an
    empty list with a message naming the folder and the suffixes looked for."""
    if files is None:
        if not root.is_dir():
            raise FileNotFoundError(f"{folder} folder {root} does not exist")
        files = lister(root)
    if not files:
        raise ValueError(f"no {nouns} ({', '.join(suffixes)}) found under {root}")
    return files


def files_digest(files: Sequence[Path]) -> str:
    """12 hex digits naming the resolved paths, in order (part of a data set's ``cache_key``)."""
    return hashlib.sha1("\n".join(str(Path(f).resolve()) for f in files).encode()).hexdigest()[:12]
