"""`frugal compare`: the same data, schedule and measurements for several models, side by side.

`run_compare(recipe)` plans the cells of a recipe (`recipe.py`, `plan.py`), runs those not yet done
(`cells.py`, `runner.py`) and writes the report (`report.py`)."""

from frugalformers.compare.recipe import Recipe, RecipeError, load_recipe
from frugalformers.compare.runner import CompareError, run_compare

__all__ = ["CompareError", "Recipe", "RecipeError", "load_recipe", "run_compare"]
