"""Recipes: validated YAML descriptions of a run, with ``key=value`` overrides."""
