"""Model kinds: one module per kind of model the profile can name.

Each module defines its kind: a record of ``conescope.model_specs`` registered with
``register_model_kind`` (the kind's YAML keys, its capabilities, its loader, the dimension its
configuration declares, what the reports print about it) and the loaded model it returns, which
implements ``conescope.model_specs.EmbeddingModel``. :func:`model_kinds` imports every module of this
package, so a new module is found without a list.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from conescope.model_specs import ModelSpec, registered_model_kinds

__all__ = ["model_kinds"]


@cache
def _import_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def model_kinds() -> dict[str, type[ModelSpec]]:
    """Every registered model kind: ``kind`` -> its record class (the modules of this package, and any
    kind registered elsewhere, as a test does)."""
    _import_modules()
    return registered_model_kinds()
