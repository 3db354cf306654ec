"""Training checkpoints: `checkpoints/step-00001000/` with the model (safetensors + config), and
`trainer.pt` (optimizer, scheduler, RNG states, data-loader position, step, metrics state).

Each checkpoint is written into a hidden temporary folder, completed with a `COMPLETE` marker and
renamed into place, so a crash mid-write leaves the previous checkpoints intact. `latest()` skips
(and reports) a checkpoint that cannot be read and falls back to the one before.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch

from frugalformers.checkpoint import (  # noqa: F401  (list_checkpoints, MARKER re-exported)
    MARKER,
    CheckpointError,
    list_checkpoints,
    load_state_strict,
    read_state,
    save,
)
from frugalformers.files import atomic_dir


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model, trainer_state: dict, keep_last: int, weights=None) -> Path:
    """Write checkpoint `step`; `weights` (a full state dict) replaces model.state_dict() when the
    live model is sharded."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    with atomic_dir(final) as tmp:
        save(model, tmp, weights)
        torch.save(trainer_state, tmp / "trainer.pt")
        (tmp / MARKER).write_text(str(step))
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model) -> dict:
    """Load weights into `model`; return the trainer state. Raises CheckpointError if unreadable."""
    load_state_strict(model, read_state(path / "model.safetensors"), source=str(path))
    try:
        return torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"cannot read {path / 'trainer.pt'}: {e} (truncated or corrupt)") from e


def resume_latest(run_dir: Path, model, log=print) -> dict | None:
    """The newest readable checkpoint's trainer state (weights loaded into `model`), or None."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(path, model)
        except CheckpointError as e:
            log(f"warning: skipping unreadable checkpoint {path.name}: {e}; trying the previous one")
    return None
