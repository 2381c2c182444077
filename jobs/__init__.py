"""Thin command-line entry points: `dinocurate <stage>` or `python -m jobs.<stage>` (argv → config → library)."""
