"""The services are composed, not inherited (docs/architecture.md, "The services layer").

Every flow service takes the runner, and the other services it needs, in its
constructor; no class in ``tandem.services`` extends another class of the package (the
runner included), and ``Tandem`` is a composition root with no methods of its own.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import tandem.services
from tandem.services import Tandem
from tandem.services.base import Runner

PACKAGE = "tandem.services"


def _modules() -> list[ModuleType]:
    names = [m.name for m in pkgutil.walk_packages(tandem.services.__path__, prefix=PACKAGE + ".")]
    return [tandem.services, *(importlib.import_module(n) for n in names)]


def _own_classes() -> list[type]:
    found: dict[str, type] = {}
    for module in _modules():
        for _name, value in inspect.getmembers(module, inspect.isclass):
            if value.__module__ == module.__name__:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def inherited_services(classes: list[type]) -> list[str]:
    """``Class(Base)`` pairs where both are classes of ``tandem.services``."""
    return sorted(
        f"{cls.__module__}.{cls.__qualname__}({base.__qualname__})"
        for cls in classes
        for base in cls.__bases__
        if base.__module__ == PACKAGE or base.__module__.startswith(PACKAGE + ".")
    )


def test_no_service_class_inherits_from_another() -> None:
    assert inherited_services(_own_classes()) == []


def test_the_checker_catches_a_mixin() -> None:
    class Flow:
        pass

    Flow.__module__ = "tandem.services.flow"

    class Mixed(Flow):
        pass

    class OnRunner(Runner):
        pass

    assert inherited_services([Flow, Mixed, OnRunner]) == [
        f"{__name__}.test_the_checker_catches_a_mixin.<locals>.Mixed(test_the_checker_catches_a_mixin.<locals>.Flow)",
        f"{__name__}.test_the_checker_catches_a_mixin.<locals>.OnRunner(Runner)",
    ]


def test_tandem_is_a_composition_root() -> None:
    own = sorted(n for n, v in vars(Tandem).items() if callable(v) and n != "__init__")
    assert own == [], f"Tandem delegates {own}; call the flow service instead"
    assert Tandem.__bases__ == (object,)


def test_every_flow_shares_one_runner(svc: Tandem) -> None:
    flows = [v for k, v in vars(svc).items() if k != "runner" and hasattr(v, "runner")]
    assert len(flows) >= 9
    assert all(f.runner is svc.runner for f in flows)
    assert svc.books.svc is svc.runner
