"""Unlearning methods behind one entry point, ``unlearn(method, model, forget, params, ...)``.

Registered: ``imu`` (default of the service), ``ga`` and ``npo`` (retain-free; with no params they
run the recommended "anchored" preset: docs/methods.md), ``iau``, ``scrub``, ``neggrad_plus``,
``finetune`` and ``retrain`` (these need the retain set). A method is a function of one
:class:`RunContext` (see ``registry.py``).
"""

from __future__ import annotations

from unlearning.methods import finetune, ga, iau, imu, neggrad_plus, npo, retrain, scrub  # noqa: F401  (registers)
from unlearning.methods.context import MethodOutcome, RunContext
from unlearning.methods.params import RECOMMENDED_PARAMS, MethodParams, recommended_params
from unlearning.methods.registry import MethodSpec, get_method, list_methods, register_method
from unlearning.methods.runner import unlearn

__all__ = [
    "RECOMMENDED_PARAMS",
    "MethodOutcome",
    "MethodParams",
    "MethodSpec",
    "RunContext",
    "get_method",
    "list_methods",
    "recommended_params",
    "register_method",
    "unlearn",
]
