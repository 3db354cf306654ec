"""A `frugal compare` recipe (YAML): which models, pretrained how, then measured how.

Two studies share the format:
- `finetune` (the default): each model is pretrained on the same data with the same schedule, then
  fine-tuned on every task of a suite with one shared recipe and several seeds (optionally also
  without pretraining, `finetune.scratch`), and timed (training and inference tokens/s, or the
  encoder's time per example) in the same run. FNet / Sparse Mixer vs BERT, CoLT5 vs LongT5, MoWE
  vs T5 and Switch.
- `uptrain` (GQA, Ainslie et al. 2023): one multi-head model is pretrained, converted to fewer
  kv heads by each pooling method, uptrained for each fraction alpha of its steps with its own
  recipe, and its decode step is timed per kv-head count.

Every `pretrain` / `finetune.run` / per-model / per-task block is a set of `frugal train` options
(`key: value`, dotted keys as on the command line, e.g. `optim.lr: 1e-3`); `model:` blocks are
`ModelConfig` fields. Validation names the bad key, preset, task or dataset and what would do.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugalformers.data.datasets import DATASETS
from frugalformers.data.mix import mix_settings
from frugalformers.presets import get_preset
from frugalformers.train.batches import dataset_folder
from frugalformers.train.config import load_run_config

STUDIES = ("finetune", "uptrain")
SPEED_KINDS = ("train_infer", "encoder", "decode", "none")
TOP_KEYS = (
    "name", "description", "study", "reference", "seed", "mix", "cloze", "models", "pretrain", "finetune", "uptrain",
    "speed",
)  # fmt: skip
MIX_KEYS = ("add", "into", "tokenizer", "times", "with_task", "seed")
FINETUNE_KEYS = (
    "dataset",
    "tokenizer",
    "tasks",
    "seeds",
    "lrs",
    "epochs",
    "min_steps",
    "max_steps",
    "scratch",
    "breakdown",
    "run",
    "per_task",
)
UPTRAIN_KEYS = ("kv_heads", "methods", "alphas", "lrs", "eval_batches")
SPEED_KEYS = ("kind", "batch_size", "seq_len", "lengths", "repeats", "warmup", "compile", "context", "train_step")
MODEL_KEYS = ("preset", "label", "model", "pretrain", "finetune")


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the file, the key and the fix."""


def _unknown(where: str, got: dict, allowed: tuple[str, ...]) -> None:
    for key in got:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=2)
            hint = f"did you mean {close}?" if close else f"valid keys: {list(allowed)}"
            raise RecipeError(f"{where}: unknown key {key!r}; {hint}")


def dotted(block: dict | None, prefix: str = "") -> list[str]:
    """{'optim': {'lr': 1e-3}, 'data.seq_len': 64} -> ['optim.lr=0.001', 'data.seq_len=64']."""
    out = []
    for k, v in (block or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in ("model",):
            out += dotted(v, key + ".")
        elif isinstance(v, dict):  # model: {field: value} -> model.field=value
            out += [f"model.{f}={_literal(x)}" for f, x in v.items()]
        else:
            out.append(f"{key}={_literal(v)}")
    return out


def _literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, list | tuple):
        return "[" + ",".join(_literal(x) for x in v) + "]"
    return str(v)


@dataclass
class ModelEntry:
    """One row of the comparison: a preset, its label, and what it does differently."""

    label: str
    preset: str
    model: dict = field(default_factory=dict)  # ModelConfig overrides, pretraining and fine-tuning
    pretrain: dict = field(default_factory=dict)  # run options for its pretraining only
    finetune: dict = field(default_factory=dict)  # run options for its fine-tuning only

    def differences(self) -> str:
        """What this model's runs set beyond the shared recipe (printed, and in compare.md)."""
        parts = [f"model.{k}={_literal(v)}" for k, v in self.model.items()]
        parts += [f"pretrain {o}" for o in dotted(self.pretrain)] + [f"finetune {o}" for o in dotted(self.finetune)]
        return ", ".join(parts)


@dataclass
class FinetuneSpec:
    dataset: str
    tokenizer: str | None = None  # default: the pretraining data's (`DATASET/NAME`)
    tasks: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: float = 3.0  # per task: steps = epochs * train rows / batch, clamped to [min_steps, max_steps]
    min_steps: int = 50
    max_steps: int = 1000
    scratch: bool = False  # also fine-tune every model without pretraining (the same recipe)
    breakdown: str | None = None  # a row field (e.g. "relation") to score each value of separately
    # fine-tuning rates to try, each over every seed; per model and task the rate with the best mean
    # validation score is reported (the FNet paper's per-model sweep); empty: the run's optim.lr
    lrs: list[float] = field(default_factory=list)
    run: dict = field(default_factory=dict)  # run options of every fine-tuning
    per_task: dict = field(default_factory=dict)  # task -> run options (and `seeds`)

    def seeds_for(self, task: str) -> list[int]:
        return list(self.per_task.get(task, {}).get("seeds", self.seeds))

    def task_options(self, task: str) -> dict:
        return {k: v for k, v in self.per_task.get(task, {}).items() if k != "seeds"}


@dataclass
class UptrainSpec:
    kv_heads: list[int] = field(default_factory=lambda: [1])
    methods: list[str] = field(default_factory=lambda: ["mean", "first", "random"])
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1])
    # peak learning rates of the uptraining runs, each a table of its own; empty: the original recipe's
    # (the paper continues T5's schedule, whose rate is by then a small fraction of its peak)
    lrs: list[float] = field(default_factory=list)
    eval_batches: int = 50


@dataclass
class MixSpec:
    """The pretraining mixture a recipe needs (`frugal data mix ADD --into INTO ...`), made before
    its cells run: ADD's text x `times` (and with `with_task`, that task's training pairs) added to
    INTO's shards, written to ADD/shards/INTO/TOKENIZER."""

    add: str
    into: str
    times: int
    tokenizer: str = "tiny"
    with_task: str | None = None
    seed: int = 0

    @property
    def shards(self) -> str:
        """The `data.tokenizer` a pretraining on the mixture names (with `data.dataset: ADD`)."""
        return f"{self.into}/{self.tokenizer}"

    @property
    def settings(self) -> dict:
        """The mixture's settings as its meta.json records them (`data.mix.mix_settings`)."""
        return mix_settings(self.add, self.into, self.tokenizer, self.times, self.seed, self.with_task)

    @property
    def command(self) -> str:
        """The `frugal data mix` command that makes this mixture."""
        line = f"frugal data mix {self.add} --into {self.into} --tokenizer {self.tokenizer} --times {self.times}"
        line += f" --with-task {self.with_task}" if self.with_task else ""
        return line + (f" --seed {self.seed}" if self.seed else "")


@dataclass
class SpeedSpec:
    kind: str = "train_infer"  # train_infer (tokens/s) | encoder (encoder ms per example) | decode | none
    batch_size: int | None = None  # default: the pretraining batch
    seq_len: int | None = None  # default: the pretraining length
    lengths: list[int] = field(default_factory=list)  # encoder: input lengths to time
    context: int = 1024  # decode: cache positions
    repeats: int = 10
    warmup: int = 3
    compile: bool | None = None  # default: the pretraining's `compile`
    train_step: bool = True  # encoder: also time a training step (false: inference only, CoLT5's Table 8)


@dataclass
class Recipe:
    name: str
    path: str
    study: str
    models: list[ModelEntry]
    reference: str
    pretrain: dict
    seed: int = 0
    description: str = ""
    finetune: FinetuneSpec | None = None
    uptrain: UptrainSpec | None = None
    speed: SpeedSpec = field(default_factory=SpeedSpec)
    mix: MixSpec | None = None
    # score the pretrained models zero-shot on the knowledge facts (compare/cloze.py): `cloze: true`
    # (every test fact, 1,000 training ones) or `cloze: {sentences: N}` (at most N of each, sampled)
    cloze: bool = False
    cloze_sentences: int | None = None
    raw: dict = field(default_factory=dict)  # the YAML as read (stored in the run folder)

    def entry(self, label: str) -> ModelEntry:
        for m in self.models:
            if m.label == label:
                return m
        raise KeyError(label)

    def model_overrides(self, m: ModelEntry) -> dict:
        """ModelConfig fields model m is built with: the shared `pretrain.model`, then its own."""
        return {**self.pretrain.get("model", {}), **m.model}

    def pretrain_options(self, m: ModelEntry) -> list[str]:
        """Run options of model m's pretraining: the shared block, then the model's own."""
        shared = {k: v for k, v in self.pretrain.items() if k != "model"}
        return [f"seed={self.seed}", *dotted(shared), *dotted({"model": self.model_overrides(m)}), *dotted(m.pretrain)]

    @property
    def pretrain_dataset(self) -> str:
        return str(self.pretrain.get("data", {}).get("dataset", "demo"))

    @property
    def pretrain_tokenizer(self) -> str:
        return str(self.pretrain.get("data", {}).get("tokenizer", "tiny"))


def _nested(block: dict | None) -> dict:
    """Dotted keys to nested dicts ({'data.seq_len': 64} -> {'data': {'seq_len': 64}}), so either
    spelling of an option reads the same."""
    out: dict = {}
    for k, v in (block or {}).items():
        parts = str(k).split(".")
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = _nested(v) if isinstance(v, dict) and parts[-1] != "model" else v
    return out


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe; every problem is a `RecipeError` naming the file and key."""
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.exists():
        raise RecipeError(f"recipe {str(path)!r} does not exist (recipes/ holds the project's)")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # omegaconf / yaml parse errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RecipeError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys ({list(TOP_KEYS)})")
    return recipe_from_dict(raw, str(path))


def recipe_from_dict(raw: dict, path: str = "<recipe>") -> Recipe:
    _unknown(path, raw, TOP_KEYS)
    study = raw.get("study", "finetune")
    if study not in STUDIES:
        raise RecipeError(f"{path}: study={study!r} is not one of {list(STUDIES)}")
    models = [_model_entry(path, i, m) for i, m in enumerate(raw.get("models") or [])]
    if not models:
        raise RecipeError(f"{path}: `models` lists no model; give preset names (see `frugal models`)")
    labels = [m.label for m in models]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise RecipeError(f"{path}: models {dupes} appear twice; give each a distinct `label`")
    reference = raw.get("reference", labels[0])
    if reference not in labels:
        raise RecipeError(f"{path}: reference={reference!r} is not one of the models {labels}")
    recipe = Recipe(
        name=str(raw.get("name") or Path(path).stem),
        path=path,
        study=study,
        models=models,
        reference=reference,
        pretrain=_nested(raw.get("pretrain")),
        seed=int(raw.get("seed", 0)),
        description=str(raw.get("description", "")),
        raw=raw,
    )
    if raw.get("mix") is not None:
        mix = raw["mix"]
        if not isinstance(mix, dict) or not {"add", "into", "times"} <= set(mix):
            raise RecipeError(
                f"{path}: mix needs `add`, `into` and `times` (e.g. {{add: knowledge, into: corpus, times: 16}})"
            )
        _unknown(f"{path}: mix", mix, MIX_KEYS)
        recipe.mix = MixSpec(**mix)
        want = (recipe.mix.add, recipe.mix.shards)
        if (recipe.pretrain_dataset, recipe.pretrain_tokenizer) != want:
            raise RecipeError(
                f"{path}: the mixture is written to {want[0]}/shards/{want[1]}; pretrain on it with "
                f"`pretrain: {{data: {{dataset: {want[0]}, tokenizer: {want[1]}}}}}`"
            )
    speed = raw.get("speed") or {}
    _unknown(f"{path}: speed", speed, SPEED_KEYS)
    recipe.speed = SpeedSpec(**speed)
    if recipe.speed.kind not in SPEED_KINDS:
        raise RecipeError(f"{path}: speed.kind={recipe.speed.kind!r} is not one of {list(SPEED_KINDS)}")
    if study == "finetune":
        ft = raw.get("finetune")
        if not ft or "dataset" not in ft:
            raise RecipeError(f"{path}: a finetune study needs `finetune: {{dataset: ..., tasks: [...]}}`")
        _unknown(f"{path}: finetune", ft, FINETUNE_KEYS)
        spec = FinetuneSpec(**{k: v for k, v in ft.items() if k not in ("run", "per_task")})
        spec.run = _nested(ft.get("run"))
        spec.per_task = {t: _nested(o) for t, o in (ft.get("per_task") or {}).items()}
        recipe.finetune = spec
        cloze = raw.get("cloze", False)
        if isinstance(cloze, dict):
            _unknown(f"{path}: cloze", cloze, ("sentences",))
            n = cloze.get("sentences")
            if not isinstance(n, int) or n < 1:
                raise RecipeError(f"{path}: cloze.sentences={n!r} must be a positive number of fact sentences")
            recipe.cloze_sentences = n
        elif not isinstance(cloze, bool):
            raise RecipeError(f"{path}: cloze={cloze!r} must be true, false or {{sentences: N}}")
        recipe.cloze = bool(cloze)
        objective = recipe.pretrain.get("objective")
        if recipe.cloze and (spec.dataset != "knowledge" or objective != "span"):
            raise RecipeError(
                f"{path}: cloze: true scores the `knowledge` facts as span corruption does; it needs "
                f"finetune.dataset: knowledge and pretrain.objective: span (got {spec.dataset}, {objective})"
            )
    elif raw.get("cloze"):
        raise RecipeError(f"{path}: cloze: true belongs to a finetune study on `knowledge`, not an uptrain study")
    else:
        up = raw.get("uptrain") or {}
        _unknown(f"{path}: uptrain", up, UPTRAIN_KEYS)
        recipe.uptrain = UptrainSpec(**up)
        if len(models) != 1:
            raise RecipeError(f"{path}: an uptrain study converts one multi-head model; `models` lists {labels}")
    validate(recipe)
    return recipe


def _model_entry(path: str, i: int, m: Any) -> ModelEntry:
    if isinstance(m, str):
        return ModelEntry(label=m, preset=m)
    if not isinstance(m, dict) or "preset" not in m:
        raise RecipeError(f"{path}: models[{i}] must be a preset name or a mapping with `preset:`, got {m!r}")
    _unknown(f"{path}: models[{i}]", m, MODEL_KEYS)
    return ModelEntry(
        label=str(m.get("label", m["preset"])),
        preset=str(m["preset"]),
        model=dict(m.get("model") or {}),
        pretrain=_nested(m.get("pretrain")),
        finetune=_nested(m.get("finetune")),
    )


def validate(recipe: Recipe) -> None:
    """Presets, run options, datasets and tasks exist; errors say which and what to do."""

    where = recipe.path
    for m in recipe.models:
        try:
            get_preset(m.preset)
            load_run_config(m.preset, None, recipe.pretrain_options(m))
            if recipe.finetune is not None:
                load_run_config(m.preset, None, dotted(recipe.finetune.run) + dotted(m.finetune))
        except ValueError as e:
            raise RecipeError(f"{where}: model {m.label!r}: {e}") from None
    _check_dataset(where, recipe.pretrain_dataset, "pretrain data.dataset")
    if recipe.finetune is not None:
        spec = recipe.finetune
        _check_dataset(where, spec.dataset, "finetune.dataset")
        have = available_tasks(spec.dataset)
        if not spec.tasks:
            raise RecipeError(f"{where}: finetune.tasks is empty; tasks of {spec.dataset!r}: {have}")
        for t in list(spec.tasks) + list(spec.per_task):
            if t not in have:
                close = difflib.get_close_matches(t, have, n=2)
                raise RecipeError(
                    f"{where}: unknown task {t!r} in dataset {spec.dataset!r}"
                    + (f"; did you mean {close}?" if close else f"; its tasks: {have}")
                )
        if any(not isinstance(lr, (int, float)) or lr <= 0 for lr in spec.lrs):
            raise RecipeError(
                f"{where}: finetune.lrs={spec.lrs} must be positive learning rates (e.g. [1.0e-4, 3.0e-4])"
            )
        if not spec.seeds or any(not isinstance(s, int) for s in spec.seeds):
            raise RecipeError(f"{where}: finetune.seeds={spec.seeds!r} must be a list of integers")
        for t in spec.tasks:
            try:
                load_run_config(recipe.models[0].preset, None, dotted(spec.run) + dotted(spec.task_options(t)))
            except ValueError as e:
                raise RecipeError(f"{where}: finetune.per_task.{t}: {e}") from None
    if recipe.uptrain is not None:
        up = recipe.uptrain
        bad = [m for m in up.methods if m not in ("mean", "first", "random")]
        if bad:
            raise RecipeError(f"{where}: uptrain.methods {bad}: use mean, first or random")
        if any(not 0 <= a <= 1 for a in up.alphas):
            raise RecipeError(f"{where}: uptrain.alphas={up.alphas} must lie in [0, 1] (the paper: 0.05)")
        if any(not isinstance(lr, (int, float)) or lr <= 0 for lr in up.lrs):
            raise RecipeError(f"{where}: uptrain.lrs={up.lrs} must be positive learning rates (e.g. [1.0e-4])")
        config = get_preset(recipe.models[0].preset).replace(**recipe.model_overrides(recipe.models[0]))
        if config.family != "decoder":
            raise RecipeError(f"{where}: an uptrain study takes a decoder preset (llama-*), not {config.family!r}")
        for g in up.kv_heads:
            if config.n_heads % g or g >= config.kv_heads:
                raise RecipeError(
                    f"{where}: uptrain.kv_heads has {g}: it must divide n_heads={config.n_heads} and be fewer "
                    f"than the model's {config.kv_heads} kv heads"
                )


def _check_dataset(where: str, name: str, key: str) -> None:
    if name not in DATASETS and not Path(name).is_dir():
        raise RecipeError(f"{where}: {key}={name!r} is neither a dataset ({sorted(DATASETS)}) nor a folder")
    try:
        dataset_folder(name)
    except ValueError as e:
        raise RecipeError(f"{where}: {key}: {e}") from None


def available_tasks(dataset: str) -> list[str]:
    return sorted(p.name for p in (dataset_folder(dataset) / "tasks").glob("*") if (p / "task.json").exists())
