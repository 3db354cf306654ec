"""`frugal compare RECIPE`: plan the cells, run the ones not yet done (in worker processes when
asked), then write the report.

The run folder (default `runs/compare/NAME`) holds `recipe.yaml` (the recipe it was made with),
`cells/KEY/` (each cell's training run, log and `result.json`) and the report. A cell is done when
its `result.json` exists; the file is written atomically at the cell's end, so a run cut off at
any point (device time ends, kill -9) continues with `--resume` where it stopped: finished cells
are read back, an interrupted pretraining continues from its last checkpoint, any other
interrupted cell starts again. Cells that time things run after all training, one at a time.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch

from frugalformers.compare.cells import cell_dir, run_cell
from frugalformers.compare.plan import Cell, plan
from frugalformers.compare.recipe import Recipe, RecipeError, load_recipe, recipe_from_dict
from frugalformers.compare.report import write_report
from frugalformers.data.mix import mix_shards
from frugalformers.files import atomic_write
from frugalformers.train.checkpointing import list_checkpoints

RESULT = "result.json"
PRIORITY = {"unigram": 0, "pretrain": 0, "uptrain": 1, "finetune": 1}
BLOCKED = "a cell it needs failed"
# a cell that failed for want of device memory while other cells shared the device (2026-12-07:
# CUBLAS_STATUS_ALLOC_FAILED beside nine other cells on an H100) runs again once the others are done
SHORT_OF_MEMORY = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDA_ERROR_OUT_OF_MEMORY")


def cells_to_retry_alone(phase: list[Cell], failed: dict[str, str]) -> list[Cell]:
    """The cells of a shared phase to run again one at a time: those that ran short of device memory
    beside others, and those that waited on them; [] when none ran short."""
    short = {c.key for c in phase if any(m in failed.get(c.key, "") for m in SHORT_OF_MEMORY)}
    if not short:
        return []
    return [c for c in phase if c.key in short or failed.get(c.key) == BLOCKED]


class CompareError(RuntimeError):
    """Cells failed; the message lists them and where their logs are."""


def default_out(recipe: Recipe) -> Path:
    return Path("runs/compare") / recipe.name


def read_result(run_dir: Path, key: str) -> dict | None:
    path = cell_dir(run_dir, key) / RESULT
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:  # cannot happen with atomic writes; a hand-edited file: redo the cell
        return None


def write_result(run_dir: Path, key: str, result: dict) -> None:
    atomic_write(cell_dir(run_dir, key) / RESULT, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2)))


def summary(cell: Cell, r: dict) -> str:
    """One short phrase of a cell's result, for its progress line."""
    if cell.kind == "finetune":
        return f"{r['metric']} {r['score']:.3f}"
    if cell.kind == "pretrain":
        start = r.get("initial_valid_loss")
        return f"held-out loss {start:.3f} -> {r['valid_loss']:.3f}" if start else f"loss {r['valid_loss']:.3f}"
    if cell.kind == "speed" and "encoder_infer_ms_per_example" in r:
        times = r["encoder_infer_ms_per_example"].values()
        said = ", ".join("out of memory" if ms is None else f"{ms:.1f} ms" for ms in times)
        return f"encoder {said} per example at {', '.join(f'{n:,}' for n in r['lengths'])} tokens"
    if cell.kind == "speed":
        return f"train {r['train_tokens_per_s']:,.0f} tokens/s, inference {r['infer_tokens_per_s']:,.0f} tokens/s"
    if cell.kind == "uptrain":
        return f"held-out loss {r['loss']:.4f} ({r['steps']} steps)"
    if cell.kind == "decode":
        return f"{r['ms_per_step']:.3f} ms per decode step"
    if cell.kind == "cloze":
        return f"facts stored: exact {r['test']['exact']:.3f} (test), {r['train']['exact']:.3f} (training questions')"
    return f"loss {r['valid_loss']:.3f}, accuracy {r['valid_accuracy']:.3f}"


@contextlib.contextmanager
def folder_lock(path: Path, what: str):
    """An exclusive lock on `path` for as long as this process runs the block (released by the OS
    if it dies); a second holder is refused with the first one's pid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise RecipeError(
            f"{what} is in use by another process (pid {pid}); wait for it or use another --out"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def prepare_folder(recipe: Recipe, run_dir: Path, resume: bool) -> None:
    """Refuse to mix runs: an existing folder needs --resume, and --resume needs the same recipe."""
    from omegaconf import OmegaConf

    stored = run_dir / "recipe.yaml"
    if stored.exists():
        if not resume:
            raise RecipeError(
                f"{run_dir} already holds a comparison; add --resume to continue it, or choose another --out"
            )
        before = OmegaConf.to_container(OmegaConf.load(stored), resolve=True)
        if before != recipe.raw:
            changed = sorted(k for k in set(before) | set(recipe.raw) if before.get(k) != recipe.raw.get(k))
            raise RecipeError(
                f"{recipe.path} differs from the recipe {run_dir} was run with (keys {changed}); "
                f"finished cells would not match it: use another --out, or restore the recipe"
            )
    elif any(p.name != ".lock" for p in run_dir.iterdir()):
        raise RecipeError(f"{run_dir} exists and is not a comparison's folder; choose another --out")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        text = OmegaConf.to_yaml(OmegaConf.create(recipe.raw))
        atomic_write(stored, lambda tmp: Path(tmp).write_text(text))


def _cell_log(run_dir: Path, key: str) -> Callable[[str], None]:
    path = cell_dir(run_dir, key) / "log.txt"
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(msg.rstrip() + "\n")

    return log


def execute(recipe_file: str, run_dir: str, key: str) -> tuple[str, dict | None, str | None, float]:
    """Run one cell (in this process or a worker): (key, result, error, seconds). The result file
    is written here, so a finished cell survives whatever happens to the parent."""

    t0 = time.time()
    run_dir_p = Path(run_dir)
    try:
        recipe = load_recipe(recipe_file)
        cell = {c.key: c for c in plan(recipe)}[key]
        with folder_lock(cell_dir(run_dir_p, key) / ".lock", f"cell {key}"):
            done = read_result(run_dir_p, key)
            if done is not None:
                return key, done, None, 0.0
            folder = cell_dir(run_dir_p, key)
            if not (list_checkpoints(folder) or list_checkpoints(folder / "run")):  # else it continues from them
                for p in folder.iterdir():
                    if p.name != ".lock":
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
            result = run_cell(recipe, cell, run_dir_p, _cell_log(run_dir_p, key))
            write_result(run_dir_p, key, result)
        return key, result, None, time.time() - t0
    except Exception as e:  # reported by the parent; the other cells go on
        _cell_log(run_dir_p, key)(traceback.format_exc())
        return key, None, f"{type(e).__name__}: {e}".splitlines()[0], time.time() - t0


def _worker_init(threads: int) -> None:
    """Worker processes: a share of the CPU threads, and death with the parent (a kill -9 of
    `frugal compare` must not leave workers writing into the folder a --resume then uses)."""
    torch.set_num_threads(threads)
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_compare(
    recipe_path: str | dict,
    out: str | None = None,
    resume: bool = False,
    workers: int = 1,
    log: Callable[[str], None] = print,
    report_only: bool = False,
    skip: tuple[str, ...] = (),
) -> Path:
    """Run (or continue) a comparison of a recipe file (or a recipe as a dict, e.g. the demo's);
    returns the run folder, whose compare.md holds the table. Cells of the kinds in `skip` (e.g.
    "speed", "decode": timings, when other jobs share the GPU) are left for a later --resume."""

    recipe = recipe_from_dict(recipe_path, "the recipe") if isinstance(recipe_path, dict) else load_recipe(recipe_path)
    if workers < 1:
        raise RecipeError(f"--workers={workers} must be at least 1")
    kinds = ("pretrain", "cloze", "finetune", "speed", "uptrain", "decode", "unigram")
    for k in skip:
        if k not in kinds:
            raise RecipeError(f"--skip {k!r}: not a kind of cell; use one of {', '.join(kinds)}")
    run_dir = Path(out) if out else default_out(recipe)
    if report_only:  # the report of the cells done so far, nothing run
        if not (run_dir / "recipe.yaml").exists():
            raise RecipeError(f"{run_dir} holds no comparison to report on")
        stored_recipe = load_recipe(str(run_dir / "recipe.yaml"))
        results = {c.key: r for c in plan(stored_recipe) if (r := read_result(run_dir, c.key)) is not None}
        log(write_report(stored_recipe, run_dir, results, command=_run_command(run_dir), here=False))
        return run_dir
    with folder_lock(run_dir / ".lock", str(run_dir)):
        prepare_folder(recipe, run_dir, resume)
        if recipe.mix is not None:  # the mixture it pretrains on: made once, refused if another is there
            m = recipe.mix
            try:
                mix_shards(m.add, m.into, m.tokenizer, m.times, m.seed, with_task=m.with_task, log=log)
            except ValueError as e:
                raise RecipeError(f"{recipe.path}: mix: {e} (`{m.command} --force`)") from None
        with open(run_dir / "commands.txt", "a") as f:  # every run and resume of this folder, in order
            f.write(_command() + "\n")
        stored = str(run_dir / "recipe.yaml")
        stored_recipe = load_recipe(stored)
        cells = plan(stored_recipe)
        results = {c.key: r for c in cells if (r := read_result(run_dir, c.key)) is not None}
        _drop_lost_checkpoints(cells, results, run_dir, log)
        todo = [c for c in cells if c.key not in results and c.kind not in skip]
        for m in recipe.models:
            if m.differences():
                log(f"{m.label}: {m.differences()}")
        held = len(cells) - len(results) - len(todo)
        log(
            f"compare {recipe.name}: {len(cells)} cells, {len(results)} already done, {len(todo)} to run"
            + (f" ({held} {'/'.join(skip)} cells left for --resume)" if skip else "")
            + f", {workers} worker{'s' * (workers > 1)} -> {run_dir}"
        )
        failed = _run_cells(todo, cells, results, stored, run_dir, workers, log)
        md = write_report(stored_recipe, run_dir, results, command=_run_command(run_dir))
    log("\n" + md)
    if failed:
        raise CompareError(
            f"{len(failed)} cell(s) failed: "
            + "; ".join(f"{k}: {e} (log: {cell_dir(run_dir, k) / 'log.txt'})" for k, e in failed.items())
            + "; fix the cause and continue with --resume"
        )
    return run_dir


def _drop_lost_checkpoints(cells: list[Cell], results: dict, run_dir: Path, log) -> None:
    """A finished pretraining whose checkpoint is gone (the folder was copied without checkpoints)
    while cells that start from it are still to run: it has to run again, and says so."""

    for c in cells:
        if c.kind != "pretrain" or c.key not in results:
            continue
        waiting = [d.key for d in cells if c.key in d.deps and d.key not in results]
        if waiting and not list_checkpoints(cell_dir(run_dir, c.key)):
            log(
                f"{c.key}: finished, but its checkpoint is not in {run_dir} and {len(waiting)} cells need it: rerunning"
            )
            del results[c.key]
            (cell_dir(run_dir, c.key) / RESULT).unlink()


def _command() -> str:
    """The command line as typed (`frugal compare ...`)."""
    args = sys.argv[1:]
    return " ".join(["frugal", *args]) if args and args[0] == "compare" else "frugal compare"


def _run_command(run_dir: Path) -> str:
    """The command that started the run in `run_dir` (its first line of commands.txt)."""
    path = run_dir / "commands.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return lines[0].replace(" --resume", "") if lines else _command()


def _run_cells(todo, cells, results, stored, run_dir, workers, log) -> dict[str, str]:
    total, done_count = len(cells), len(results)
    failed: dict[str, str] = {}
    by_key = {c.key: c for c in cells}

    def finished(key, result, error, seconds):
        nonlocal done_count
        done_count += 1
        cell = by_key[key]
        if error:
            failed[key] = error
            log(f"[{done_count}/{total}] {cell.describe()}: FAILED {error}")
        else:
            results[key] = result
            log(f"[{done_count}/{total}] {cell.describe()}: {summary(cell, result)} ({seconds:.0f} s)")

    def ready(c: Cell) -> bool:
        return all(d in results for d in c.deps)

    def blocked(c: Cell) -> bool:
        return any(d in failed for d in c.deps)

    def one_at_a_time(some: list[Cell]) -> None:
        for c in sorted(some, key=lambda c: PRIORITY.get(c.kind, 2)):
            if blocked(c):
                failed[c.key] = BLOCKED
                continue
            finished(*execute(stored, str(run_dir), c.key))

    # training first (in workers when asked); then the timings one after another in this process, with
    # nothing else on the device (timing while other cells compiled and warmed up, 2026-12-07 on an
    # H100, spread the repeats by up to 180% of their median)
    for phase in ([c for c in todo if not c.exclusive], [c for c in todo if c.exclusive]):
        if workers == 1 or (phase and phase[0].exclusive):
            one_at_a_time(phase)
        elif phase:
            _run_pool(phase, stored, run_dir, workers, ready, blocked, finished, failed)
            again = cells_to_retry_alone(phase, failed)
            if again:
                log(f"{len(again)} cell(s) ran out of device memory beside others or waited on one: again, alone")
                for c in again:
                    done_count -= failed.pop(c.key) != BLOCKED  # a blocked cell was never counted
                one_at_a_time(again)
    return failed


def _run_pool(shared, stored, run_dir, workers, ready, blocked, finished, failed) -> None:
    threads = max(1, (os.cpu_count() or 1) // workers)
    pending = sorted(shared, key=lambda c: PRIORITY.get(c.kind, 2))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,)) as pool:
        running = {}
        while pending or running:
            for c in [c for c in pending if blocked(c)]:
                pending.remove(c)
                failed[c.key] = BLOCKED
            for c in [c for c in pending if ready(c)][: workers - len(running)]:
                pending.remove(c)
                running[pool.submit(execute, stored, str(run_dir), c.key)] = c.key
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                running.pop(fut)
                finished(*fut.result())
