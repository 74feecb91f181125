"""A continual-learning method kept outside pah_jax: Memory Aware Synapses (`mas.py`) and a
config that runs it (`config.py`). docs/adding_a_method.md walks through it:

  PYTHONPATH=examples python -m pah_jax.main --config=examples/custom_method/config.py --workdir=runs/mas
"""
