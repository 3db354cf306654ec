import subprocess
import sys

from frugalformers.cli import main
from frugalformers.presets import PRESETS


def test_models_lists_every_preset(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert f"| {name} " in out


def test_models_bad_preset_is_a_clear_error(capsys):
    assert main(["models", "bert-bas"]) == 2
    assert "unknown preset 'bert-bas'" in capsys.readouterr().err


def test_frugal_command_is_installed():
    r = subprocess.run(
        [sys.executable, "-m", "frugalformers.cli", "models", "bert-tiny"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "bert-tiny" in r.stdout
