"""benchmarks/mowe_memorization.py: the prior its table prints beside the models (each relation's most
common training answer, scored as the QA task is: normalised exact match)."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("mowe_memorization", ROOT / "benchmarks" / "mowe_memorization.py")
memo = importlib.util.module_from_spec(spec)
sys.path.insert(0, str(ROOT / "benchmarks"))  # it imports longdoc_probe, as when run from benchmarks/
try:
    spec.loader.exec_module(memo)
finally:
    sys.path.remove(str(ROOT / "benchmarks"))


def test_relation_prior_answers_each_relation_with_its_most_common_answer():
    train = [{"relation": "capital", "label": x} for x in ("Paris", "Paris", "Rome")]
    train += [{"relation": "currency", "label": x} for x in ("euro", "The Euro", "dollar")]
    rows = [{"relation": "capital", "label": "Paris"}, {"relation": "capital", "label": "Rome"},
            {"relation": "currency", "label": "euro"}, {"relation": "currency", "label": "yen"}]  # fmt: skip
    # capital -> Paris (1 of 2 right); currency -> euro (normalised, "The Euro" counts with it): 1 of 2
    assert memo.relation_prior(train, rows) == 0.5
    assert memo.relation_prior(train, train) == 4 / 6
