"""Metrics: one JSON object per line in `RUN/metrics.jsonl`, TensorBoard events when the
`tensorboard` package is installed, and a tqdm progress bar."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


class MetricsLogger:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: JSONL only
                self.tb = None

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean) + "\n")
        if self.tb is not None and "step" in record:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, record["step"])

    def truncate_after(self, step: int) -> None:
        """On resume: drop records logged after the checkpoint's step (they will be redone), and a
        last line a kill tore."""
        if not self.enabled or not self.path.exists():
            return
        keep = [json.dumps(r) for r in read_records(self.path) if r.get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_records(path: Path, warn=None) -> list[dict]:
    """The JSON lines of `path`. A last line cut off by a kill is left out with a warning naming the
    file; a bad line elsewhere is an error naming the file and line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):
                (warn or (lambda m: print(m, file=sys.stderr)))(
                    f"warning: {path}: its last line is incomplete (the run was stopped while writing it); ignored"
                )
                break
            raise ValueError(f"{path}:{i}: not a JSON record; the metrics file is damaged") from None
    return out


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise ValueError(f"no metrics.jsonl in {run_dir}: not a run folder")
    return read_records(path)
