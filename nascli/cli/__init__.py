"""The ``nascli`` command line: one Typer command per stage."""
