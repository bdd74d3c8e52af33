"""The soak (`make soak`, `python -m bench.soak`): the real `uat-bot serve` under storms,
commands and faults for SOAK_MINUTES, then the invariants that must hold (see __main__.py).

A package, not a module, so `make bench` (which runs bench/'s modules) leaves it out.
"""
