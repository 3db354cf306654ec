"""A run folder (`out`) that cannot be mixed up: one run at a time, no run on top of another
unless asked, nothing half-written left behind.

- A lock (`.run.lock`, holding the pid) is held for the whole run: a second run into the same folder
  is refused with the holder's pid. The OS releases it when the process dies, kill -9 included.
- A folder that already holds a run (config.yaml, metrics.jsonl, checkpoints, test results) is
  refused unless the run continues it (`--resume`) or replaces it (`--overwrite`).
- Hidden temporary folders and files of writes a kill interrupted are removed at the next start.
- `out` that is a file, or a path that cannot be created, is an error naming it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

from frugalformers.train.checkpointing import list_checkpoints

LOCK = ".run.lock"
RUN_FILES = ("config.yaml", "metrics.jsonl", "test_metrics.json", "test_predictions.jsonl", "labels.json")


class RunFolderError(ValueError):
    """The run folder cannot be used as asked; the message says why and what to do."""


def holds_a_run(folder: Path) -> bool:
    return any((folder / f).exists() for f in RUN_FILES) or bool(list_checkpoints(folder))


def _make(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"out={folder} is a file, not a folder; choose another out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RunFolderError(f"out={folder}: cannot write there ({e.strerror}); choose a writable folder") from None


def clean_leftovers(folder: Path) -> list[str]:
    """Remove the hidden temporary entries of interrupted atomic writes (`.NAME.XXXX` folders and
    `.NAME.XXXX.tmp` files, checkpoints/ included); returns their names."""
    gone = []
    for parent in (folder, folder / "checkpoints"):
        if not parent.is_dir():
            continue
        for p in parent.iterdir():
            if p.name.startswith(".") and p.name not in (LOCK, ".lock") and (p.is_dir() or p.suffix == ".tmp"):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                gone.append(str(p.relative_to(folder)))
    return gone


def clear_run(folder: Path) -> None:
    """Remove a previous run's files (for --overwrite); files the run did not write stay."""
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
    for sub in ("checkpoints", "tensorboard"):
        shutil.rmtree(folder / sub, ignore_errors=True)


@contextlib.contextmanager
def run_folder(out: str | Path, resume: bool = False, overwrite: bool = False, log=print, enabled: bool = True):
    """Hold `out` for one run (see the module docstring). `enabled=False` (ranks other than 0 under
    torchrun) checks nothing and holds nothing."""
    folder = Path(out)
    if not enabled:
        yield folder
        return
    _make(folder)
    f = open(folder / LOCK, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise RunFolderError(
            f"out={folder} is in use by another run (pid {pid}); wait for it to finish or choose another out"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    try:
        gone = clean_leftovers(folder)
        if gone:
            log(f"removed what an interrupted write left in {folder}: {', '.join(gone)}")
        if holds_a_run(folder) and not resume and not overwrite:
            raise RunFolderError(
                f"out={folder} already holds a run; add --resume to continue it, --overwrite to start it "
                f"again, or choose another out"
            )
        yield folder  # (an overwritten run is cleared by the caller once the new one has validated: clear_run)
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
