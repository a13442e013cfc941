"""Recipes: the SOLAR experiment as one YAML file (spec.py), planned and run as dependent jobs (plan.py), its rows
read and cancelled (state.py), read back as the paper's tables, merge surfaces and run comparisons (tables.py).
Presets in presets.py."""

from backend.recipe.plan import Plan, plan, plan_text, run_recipe, submit
from backend.recipe.state import cancel_run, cancellable, runs, stage_state, stages
from backend.recipe.presets import PRESETS, preset
from backend.recipe.spec import RecipeError, RecipeSpec, expand_runs, load_recipe

__all__ = ["PRESETS", "Plan", "RecipeError", "RecipeSpec", "cancel_run", "cancellable", "expand_runs", "load_recipe", "plan",
           "plan_text", "preset", "run_recipe", "runs", "stage_state", "stages", "submit"]
