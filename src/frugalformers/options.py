"""Typed block options: one dataclass per block family, each field a paper default with its source.

`ModelConfig.options` stays a plain dict (it is what `config.json` stores, so checkpoints written
before these classes load unchanged), but every key must be a field of one of the classes below
(a misspelled key is an error naming the closest field), every value must have its field's type,
and an override merges key by key into a preset's options (`model.options.capacity_factor=2.0`
changes that key only). Blocks read their settings through `block_options(config.options, Cls)`,
so each default lives here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MixingOptions:
    """FNet / Linear / Random token mixing (Lee-Thorp et al. 2021)."""

    fourier_impl: str = "auto"  # fft | rfft | dft | auto (the official code: FFT on GPU, DFT matmuls on TPU)
    mixing_padding: str = "fixed"  # fixed: mix over max_seq_len with padding zeroed, as the official code


@dataclass(frozen=True)
class MoEOptions:
    """The `moe` feed-forward: the official Sparse Mixer defaults (Lee-Thorp & Ainslie 2022, `sparse_mixers/`)."""

    n_experts: int = 16
    routing: str = "experts_choose"  # experts_choose (Sparse Mixer) | tokens_choose (Switch)
    capacity_factor: float = 1.0  # Fast Sparse Mixer: 0.5 in training
    eval_capacity_factor: float | None = None  # None: capacity_factor
    top_k: int = 1
    min_capacity: int = 4
    max_group_size: int = 4096
    batch_prioritized: bool = True
    jitter: float = 0.0
    expert_dropout: float = 0.1  # 0.1 pre-training, 0.2 fine-tuning in the official configs
    aux_loss_factor: float = 0.01
    z_loss_factor: float = 1e-4
    per_example_groups: bool = False


@dataclass(frozen=True)
class LocalAttentionOptions:
    """LongT5 local and transient-global attention (Guo et al. 2022, Section 3.1)."""

    local_radius: int = 127  # r = 127: each token sees 127 on either side
    global_block: int = 16  # k = 16: one transient global token per block of 16


@dataclass(frozen=True)
class RoutedOptions:
    """CoLT5 conditional attention and feed-forward (Ainslie et al. 2023, Sections 3.1-3.3, Table 7)."""

    light_heads: int | None = None  # None: a quarter of the heads (r_L = 1/4)
    heavy_heads: int | None = None  # None: the other heads
    routed_tokens: float = 1 / 16  # m = n / 16 tokens through the heavy branches
    kv_factor: float = 2.0  # heavy attention: m queries over 2m keys / values
    light_d_ff: int | None = None  # None: d_ff / 2
    heavy_d_ff: int | None = None  # None: 4 d_ff
    router_eps: float = 1.0  # the soft top-k's entropy regulariser
    router_iters: int = 50  # coordinate-descent iterations (router_solver: iterative)
    router_train_k_factor: float = 9 / 8  # route 9k/8 tokens in training, k at inference
    heavy_position_bias: bool = True  # a T5 relative bias over the routed tokens' positions (the paper is silent)
    router_input: str = "normalized"  # normalized | residual
    router_straight_through: bool = False
    router_solver: str = "exact"  # exact (closed-form fixed point of the descent) | iterative


@dataclass(frozen=True)
class WordExpertOptions:
    """MoWE word experts (dos Santos et al. 2023): one bank shared by every MoWE layer."""

    mowe_experts: int = 32768  # the paper's sweet spot for a 1M-word routing vocabulary
    mowe_d_expert: int = 64
    mowe_skip_top: int = 16  # the 16 most frequent routing ids are never routed
    mowe_bank_dtype: str = "float32"  # float32 | bfloat16
    mowe_sparse_grad: bool = False  # row-sparse bank gradients (one process only)


FAMILIES = (MixingOptions, MoEOptions, LocalAttentionOptions, RoutedOptions, WordExpertOptions)
FIELDS: dict[str, tuple[type, dataclasses.Field]] = {
    f.name: (cls, f) for cls in FAMILIES for f in dataclasses.fields(cls)
}


def _allowed(cls: type, name: str) -> tuple[type, ...]:
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    out = []
    for a in args:
        out += [int, float] if a is float else [a if a is not type(None) else type(None)]
    return tuple(out)


def validate_options(options: dict[str, Any]) -> None:
    """Every key a field of a block family, every value of its field's type; else a ValueError
    naming the key, the closest field and the family."""
    if not isinstance(options, dict):
        raise ValueError(f"options={options!r} must be a dict of block settings")
    for key, value in options.items():
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), list(FIELDS), n=2)
            hint = f"; did you mean {close}?" if close else f"; valid keys: {sorted(FIELDS)}"
            raise ValueError(f"unknown block option {key!r}{hint}")
        cls, _ = FIELDS[key]
        allowed = _allowed(cls, key)
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            names = "/".join(t.__name__ for t in allowed)
            raise ValueError(f"options.{key}={value!r} must be {names} ({cls.__name__})")


def block_options(options: dict[str, Any], cls: type):
    """The `cls` family's settings: its defaults, with the keys `options` sets."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in names})


def merge_options(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A preset's options with an override's keys replaced one by one (not the whole bag)."""
    return {**base, **override}


def help_text() -> str:
    """Every block option with its default, by family (for `frugal train --help`)."""
    lines = []
    for cls in FAMILIES:
        fields = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls))
        lines.append(f"  model.options ({cls.__name__}): {fields}")
    return "\n".join(lines)
