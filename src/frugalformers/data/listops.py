"""ListOps (Nangia & Bowman 2018) as in the Long Range Arena: nested MIN / MAX / MED / SM lists.

Our own generator, following LRA's recipe: operators MIN, MAX, MED (the median truncated to an
integer, as LRA's `int(np.median(x))`), SM (sum modulo 10);
digits 0-9; depth <= 10; at most 10 arguments per operator; sequences of 500-2000 tokens;
splits of 96k / 2k / 2k. Tokens are whitespace separated, e.g. `[MAX 4 [MIN 2 3 ] 1 0 ]`.
Seeded and deterministic: the same seed gives the same examples on every machine.
"""

from __future__ import annotations

import random
import statistics

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VOCAB = list(OPERATORS) + [END] + [str(d) for d in range(10)]


def _apply(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        return int(statistics.median(args))
    return sum(args) % 10


def _tree(rng: random.Random, depth: int, max_depth: int, max_args: int, branch_p: float):
    """A random expression tree: nested lists [op, arg, arg, ...] or digits."""
    if depth >= max_depth or rng.random() > branch_p:
        return rng.randint(0, 9)
    n = rng.randint(2, max_args)
    return [rng.choice(OPERATORS)] + [_tree(rng, depth + 1, max_depth, max_args, branch_p) for _ in range(n)]


def _tokens(t, out: list[str]) -> None:
    if isinstance(t, int):
        out.append(str(t))
        return
    out.append(t[0])
    for a in t[1:]:
        _tokens(a, out)
    out.append(END)


def _value(t) -> int:
    if isinstance(t, int):
        return t
    return _apply(t[0], [_value(a) for a in t[1:]])


def evaluate(expression: str) -> int:
    """Evaluate a token string with an explicit stack (independent of the generator's trees)."""
    stack: list[list] = []
    result = None
    for tok in expression.split():
        if tok in OPERATORS:
            stack.append([tok])
        elif tok == END:
            op, *args = stack.pop()
            value = _apply(op, args)
            if stack:
                stack[-1].append(value)
            else:
                result = value
        else:
            d = int(tok)
            if stack:
                stack[-1].append(d)
            else:
                result = d
    if stack or result is None:
        raise ValueError(f"unbalanced ListOps expression: {expression[:80]}...")
    return result


def generate(
    n: int,
    seed: int,
    min_len: int = 500,
    max_len: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    branch_p: float = 0.25,
) -> list[dict]:
    """`n` examples {"text", "label"} with token length in [min_len, max_len] (rejection sampling).

    The top level is always an operator (as in LRA); `branch_p` is the chance an argument is itself
    a list, which with up to 10 arguments gives the long, deep expressions LRA uses."""
    rng = random.Random(seed)
    out: list[dict] = []
    while len(out) < n:
        root = [rng.choice(OPERATORS)] + [
            _tree(rng, 1, max_depth, max_args, branch_p) for _ in range(rng.randint(2, max_args))
        ]
        toks: list[str] = []
        _tokens(root, toks)
        if min_len <= len(toks) <= max_len:
            out.append({"text": " ".join(toks), "label": str(_value(root))})
    return out
