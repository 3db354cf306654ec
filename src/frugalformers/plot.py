"""`frugal plot RUN...`: training loss and validation metrics of one or more runs in one PNG."""

from __future__ import annotations

from pathlib import Path

from frugalformers.train.logger import read_metrics

LABELS = {  # metric key -> the axis a person reads
    "loss": "training loss",
    "valid_loss": "held-out loss",
    "valid_mlm_accuracy": "held-out MLM accuracy",
    "valid_token_accuracy": "held-out next-token accuracy",
    "valid_target_accuracy": "held-out target accuracy",
    "valid_accuracy": "validation accuracy",
    "valid_macro_f1": "validation macro-F1",
}


def label(key: str) -> str:
    return LABELS.get(key, key.removeprefix("valid_").replace("_", " "))


def plot_runs(runs: list[str], out: str, title: str = "training curves", names: list[str] | None = None) -> Path:
    """One panel of training loss and up to three of held-out metrics; `names` label the runs
    (default: their folder names)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = names or [Path(r).name or r for r in runs]
    data = {name: read_metrics(r) for name, r in zip(names, runs)}
    valid_keys = sorted({k for recs in data.values() for r in recs for k in r if k.startswith("valid_")})
    n = 1 + min(len(valid_keys), 3)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.8), dpi=110, squeeze=False)
    for name, recs in data.items():
        train = [r for r in recs if "loss" in r and r.get("loss") is not None]
        axes[0][0].plot([r["step"] for r in train], [r["loss"] for r in train], label=name)
        for ax, key in zip(axes[0][1:], valid_keys[:3]):
            pts = [r for r in recs if r.get(key) is not None]
            ax.plot([r["step"] for r in pts], [r[key] for r in pts], marker="o", label=name)
            ax.set_title(label(key))
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(label(key))
    axes[0][0].set_title(label("loss"))
    axes[0][0].set_xlabel("optimizer step")
    axes[0][0].set_ylabel(label("loss"))
    for ax in axes[0]:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
