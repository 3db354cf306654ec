"""Every ```python block of the README runs, in order, in one namespace."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # (the examples write files relative to where they run)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README block {i}", "exec"), namespace)
        except Exception as e:  # pragma: no cover - the message names the block
            raise AssertionError(f"README python block {i} failed: {e!r}\n{block}") from e


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    assert text.index("make demo") < text.index("make test") < text.index("## Quickstart")


def test_readme_cli_examples_run(tmp_path, monkeypatch):
    """The `frugal ...` lines of the README's training block, run in a scratch folder."""
    import shlex

    from frugalformers.cli import main
    from frugalformers.data.datasets import prepare

    prepare("demo", log=lambda *_: None)
    text = README.read_text()
    monkeypatch.chdir(tmp_path)
    lines = []
    for heading in ("## Train, fine-tune", "## Your own data", "## Multi-head to GQA"):
        section = text[text.index(heading) :]
        section = section[: section.index("\n## ", 4)]
        for code in re.findall(r"```python\n(.*?)```", section, re.S):  # (the files the commands read)
            exec(compile(code, heading, "exec"), {})
        block = section[section.index("```bash") + 7 : section.index("```", section.index("```bash") + 7)]
        lines += [ln.split("#")[0].strip() for ln in block.splitlines() if ln.startswith("frugal ")]
    assert len(lines) >= 12
    for line in lines:
        args = shlex.split(line)[1:]
        if args[0] in ("train", "finetune", "uptrain"):
            args.insert(2 if args[0] == "uptrain" else 1, "--no-progress")
        if args[0] in ("train", "finetune"):
            args += ["data.batch_size=8", "data.seq_len=32", "eval_batches=2"]
        assert main(args) == 0, line


def test_readme_recipe_example_is_a_valid_recipe(demo_data):
    """The recipe in "Compare models" loads and validates as `frugal compare` reads it."""
    import yaml

    from frugalformers.compare.plan import plan
    from frugalformers.compare.recipe import recipe_from_dict

    text = README.read_text()
    section = text[text.index("## Compare models") :]
    raw = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", section, re.S)[0])
    recipe = recipe_from_dict(raw, "README")
    assert [m.label for m in recipe.models] == ["bert-tiny", "fnet-tiny", "linear-tiny"]
    assert recipe.entry("linear-tiny").pretrain == {"optim": {"lr": 1.0e-3}}
    assert len(plan(recipe)) == 1 + 3 + 3 * 2 * 3 + 3


def test_benchmarks_readme_lists_every_script():
    """benchmarks/README.md is the index: each script in benchmarks/ has its row."""
    bench = README.parent / "benchmarks"
    index = (bench / "README.md").read_text()
    missing = [p.name for p in sorted(bench.glob("*.py")) + sorted(bench.glob("*.sh")) if f"`{p.name}`" not in index]
    assert not missing, missing
