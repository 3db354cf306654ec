"""Which layers get a special block: the layout rules of the official FNet / Sparse Mixer code
(`f_net/models.py`, `sparse_mixers/models.py`, `LayerLayout`), for L layers and n special ones:

- TOP:    layer >= L - n                 (FNet-Hybrid: 2 attention layers at the top)
- BOTTOM: layer < n
- MIDDLE: L - n <= 2 * layer < L + n
- MIXED:  layer % (L // n) == 0          (note: this can select more than n layers, e.g. 5 for L=14, n=4,
                                          exactly as the official rule does)
"""

from __future__ import annotations

LAYOUTS = ("TOP", "BOTTOM", "MIDDLE", "MIXED")


def layout_layers(n_layers: int, n_special: int, layout: str) -> list[int]:
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not one of {LAYOUTS}")
    if not 0 <= n_special <= n_layers:
        raise ValueError(f"n_special={n_special} must be between 0 and n_layers={n_layers}")
    if n_special == 0:
        return []
    rule = {
        "TOP": lambda i: i >= n_layers - n_special,
        "BOTTOM": lambda i: i < n_special,
        "MIDDLE": lambda i: n_layers - n_special <= 2 * i < n_layers + n_special,
        "MIXED": lambda i: i % (n_layers // n_special) == 0,
    }[layout]
    return [i for i in range(n_layers) if rule(i)]


def layer_recipe(n_layers: int, base: str, special: str, n_special: int, layout: str) -> tuple[str, ...]:
    """Per-layer names: `special` at the layout's layers, `base` elsewhere."""
    chosen = set(layout_layers(n_layers, n_special, layout))
    return tuple(special if i in chosen else base for i in range(n_layers))
