"""Checkpoints: `model.safetensors` + `config.json` in a folder, each written atomically.

Tensors shared by several modules (tied weights, one expert bank used by several layers) are
stored once; the aliases are recorded in the safetensors metadata and restored on load. Loading
names every missing, unexpected or mis-shaped tensor instead of failing on the first.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from frugalformers.api import build_model
from frugalformers.config import ModelConfig
from frugalformers.files import atomic_dir, atomic_write  # noqa: F401  (re-exported)

WEIGHTS = "model.safetensors"
MARKER = "COMPLETE"  # a training checkpoint (`checkpoints/step-N/`) is whole once this file is in it
CONFIG = "config.json"


class CheckpointError(ValueError):
    """A checkpoint that does not match the model it is loaded into, or cannot be read."""


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop names whose tensor is the same storage as an earlier one; return the aliases."""
    seen: dict[tuple, str] = {}
    unique, aliases = {}, {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key in seen and t.numel() > 0:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            t = t.detach()
            if t.untyped_storage().nbytes() != t.numel() * t.element_size():  # a view (e.g. fused q/k/v)
                t = t.clone()  # safetensors refuses tensors that share storage
            unique[name] = t.contiguous().cpu()
    return unique, aliases


def save_state(
    model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None, state: dict | None = None
) -> None:
    unique, aliases = _dedupe(model.state_dict() if state is None else state)
    meta = {"aliases": json.dumps(aliases), **(metadata or {})}
    atomic_write(Path(path), lambda tmp: save_file(unique, tmp, metadata=meta))


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no weights file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated / corrupt files
        raise CheckpointError(f"cannot read weights {path}: {e} (the file is truncated or corrupt)") from e
    for alias, target in json.loads(meta.get("aliases", "{}")).items():
        state[alias] = state[target]
    return state


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load `state` into `model`, or raise naming every missing, unexpected and mis-shaped tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = [
        f"{k}: {source} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing from {source}: {missing}")
        if unexpected:
            parts.append(f"unexpected in {source}: {unexpected}")
        if misshaped:
            parts.append(f"mis-shaped: {misshaped}")
        raise CheckpointError("; ".join(parts))
    with torch.no_grad():
        for k, t in own.items():
            t.copy_(state[k])


def save(model: nn.Module, directory: str | Path, state: dict | None = None) -> Path:
    """Write `config.json` and `model.safetensors` into `directory` (created if needed);
    `state` (a full state dict) stands in for model.state_dict() when the model is sharded."""
    directory = Path(directory)
    config: ModelConfig = model.config
    save_state(model, directory / WEIGHTS, {"format": "frugalformers"}, state)
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True)
    atomic_write(directory / CONFIG, lambda tmp: Path(tmp).write_text(text))
    return directory


def load_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG
    if not path.exists():
        raise CheckpointError(f"no {CONFIG} in {directory}: not a frugalformers checkpoint folder")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    return ModelConfig.from_dict(d)


def load(directory: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
    """Build the model described by `directory/config.json` and load its weights."""

    config = load_config(directory)
    model = build_model(config)
    load_state_strict(model, read_state(Path(directory) / WEIGHTS), source=str(Path(directory) / WEIGHTS))
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def list_checkpoints(run_dir: Path) -> list[Path]:
    """A run folder's complete checkpoints (`checkpoints/step-N/` holding MARKER), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.exists():
        return []
    return sorted(p for p in root.glob("step-*") if (p / MARKER).exists())
