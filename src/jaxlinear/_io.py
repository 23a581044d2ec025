"""Writing files so that a failure never leaves half a file behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def check_writable(path: str | Path) -> Path:
    """Returns `path` as a `Path`; raises `OSError` if its folder is missing or read-only.

    Called before any work starts, so a bad output path fails in a second, not after training.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OSError(f"cannot write {path}: folder {folder} does not exist")
    if path.is_dir():
        raise OSError(f"cannot write {path}: it is a folder")
    # `os.access` says yes for root everywhere, even where no file can be made (/proc):
    # making (and removing) a temporary file beside the target is the real test.
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    except OSError as error:
        raise OSError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(handle)
    os.unlink(probe)
    return path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, then renames it into place."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        # mkstemp makes the file private (0600); give it the permissions `open` would have.
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, value) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, allow_nan=False) + "\n")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_all_atomic(files: dict[Path, bytes]) -> None:
    """Writes several files so that either all of them appear or none does.

    Each is first written in full to a temporary file beside its target (creating a missing
    target folder); only when every one is complete are they renamed into place. A failure
    before that removes the temporary files and any folder made here.
    """
    staged: list[tuple[str, Path]] = []
    made_folders: list[Path] = []
    try:
        for path, data in files.items():
            path = Path(path)
            if not path.parent.exists():
                path.parent.mkdir(parents=False)
                made_folders.append(path.parent)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            staged.append((temporary, path))
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.chmod(temporary, 0o666 & ~_current_umask())
    except BaseException as error:
        for temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)
        for folder in made_folders:
            folder.rmdir()
        if isinstance(error, OSError):
            raise OSError(f"cannot write {path}: {error.strerror or error}") from None
        raise
    for temporary, path in staged:
        os.replace(temporary, path)
