"""Experiment scripts around pah_jax (benchmarks, paper tables, baselines, cross-checks).

Each runs from the repository root as a module: `python -m experiments.<name> --help`.
pah_jax never imports this package.
"""
