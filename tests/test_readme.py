"""Every ```python block of the README runs, in order, in one namespace."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
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
