"""Benchmarks: each op against its peer library, checked for agreement first.

Cases live in one registry. An op adds its cases in one module under
``kernelzoo/bench/cases/`` (imported automatically) with the :func:`case`
decorator; ``kernelzoo bench [OP ...]`` runs them.
"""

from .registry import Bench, case, list_cases, run, run_case, skip

__all__ = ["Bench", "case", "list_cases", "run", "run_case", "skip"]
