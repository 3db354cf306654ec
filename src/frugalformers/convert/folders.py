"""Model folders in either format: ours (`config.json` with `family`) or Hugging Face
(`config.json` with `model_type`, loaded with `from_pretrained` from the local folder only)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from frugalformers.checkpoint import list_checkpoints, load, save
from frugalformers.convert.hf import from_hf_model, to_hf_model


def model_folder(path: str | Path) -> Path:
    """`path` itself, or for a run folder (no config.json, a checkpoints/ folder) its newest checkpoint."""
    p = Path(path)
    if not (p / "config.json").exists() and (p / "checkpoints").exists():
        ckpts = list_checkpoints(p)
        if ckpts:
            return ckpts[-1]
    return p


def folder_format(path: str | Path) -> str:
    cfg = model_folder(path) / "config.json"
    if not cfg.exists():
        raise ValueError(f"{path} has no config.json: not a model folder (ours or Hugging Face)")
    d = json.loads(cfg.read_text())
    if "family" in d:
        return "ours"
    if "model_type" in d:
        return "hf"
    raise ValueError(f"{cfg} names neither `family` (frugalformers) nor `model_type` (Hugging Face)")


def load_any(path: str | Path) -> nn.Module:
    """Our model from a folder of ours (a checkpoint or a run folder) or a Hugging Face folder."""
    path = model_folder(path)
    if folder_format(path) == "ours":
        return load(path)
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        cls = {
            "llama": transformers.LlamaForCausalLM,
            "t5": transformers.T5ForConditionalGeneration,
            "bert": transformers.BertModel,
            "fnet": transformers.FNetModel,
            "gpt2": transformers.GPT2LMHeadModel,
        }.get(config.model_type)
    if cls is None:
        raise ValueError(f"{path}: model_type={config.model_type!r} is not supported (bert, fnet, t5, llama, gpt2)")
    return from_hf_model(cls.from_pretrained(str(path), local_files_only=True).eval())


def save_as(model: nn.Module, out: str | Path, fmt: str) -> Path:
    """Write `model` as ours (`save`) or as a Hugging Face folder (`save_pretrained`)."""
    if fmt == "ours":
        return save(model, out)
    if fmt != "hf":
        raise ValueError(f"format={fmt!r} is not one of ours, hf")

    to_hf_model(model).save_pretrained(str(out))
    return Path(out)
