import ast

from frugalformers.data import listops


def _python_eval(expr: str) -> int:
    """Evaluate by rewriting into nested Python calls: a second, independent evaluator."""
    import statistics

    src = expr.replace("[MIN", "MIN(").replace("[MAX", "MAX(").replace("[MED", "MED(").replace("[SM", "SM(")
    src = src.replace(" ]", ")").replace("]", ")")
    src = "(".join(part for part in src.split("("))
    tokens = src.split()
    out = []
    for i, t in enumerate(tokens):
        out.append(t)
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ")"
        if not t.endswith("(") and nxt != ")":
            out.append(",")
    env = {
        "MIN": lambda *a: min(a),
        "MAX": lambda *a: max(a),
        "MED": lambda *a: int(statistics.median(a)),
        "SM": lambda *a: sum(a) % 10,
    }
    code = compile(ast.parse(" ".join(out), mode="eval"), "<listops>", "eval")
    return eval(code, env)


def test_generator_is_seeded_and_in_range():
    a, b = listops.generate(30, seed=7), listops.generate(30, seed=7)
    assert a == b and a != listops.generate(30, seed=8)
    for ex in a:
        n = len(ex["text"].split())
        assert 500 <= n <= 2000
        assert set(ex["text"].split()) <= set(listops.VOCAB)


def test_labels_match_two_independent_evaluations():
    for ex in listops.generate(40, seed=3):
        assert listops.evaluate(ex["text"]) == int(ex["label"]) == _python_eval(ex["text"])


def test_evaluator_on_known_expressions():
    assert listops.evaluate("[MAX 2 9 [MIN 4 7 ] 0 ]") == 9
    assert listops.evaluate("[SM 5 6 [MED 1 2 3 4 ] ]") == (5 + 6 + 2) % 10
    assert listops.evaluate("[MED 1 2 3 4 ]") == 2
    assert listops.evaluate("[MIN 3 [MAX 1 8 ] ]") == 3


def test_short_lengths_for_tests():
    ex = listops.generate(10, seed=0, min_len=10, max_len=60, max_depth=4)
    assert all(10 <= len(e["text"].split()) <= 60 for e in ex)
