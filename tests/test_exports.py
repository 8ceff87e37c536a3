from __future__ import annotations

import importlib
import pkgutil

import wsendpoints


def test_root_exports_every_public_name_of_its_modules() -> None:
    public_modules = ["closecodes", "exceptions", "endpoints", "brokers"]
    expected = {"__version__"}
    hidden = {"Deliver"}  # a type alias, imported from wsendpoints.brokers
    for name in public_modules:
        expected |= set(importlib.import_module(f"wsendpoints.{name}").__all__)
    assert set(wsendpoints.__all__) == expected - hidden
    for name in wsendpoints.__all__:
        assert hasattr(wsendpoints, name)


def test_every_module_declares_all() -> None:
    for info in pkgutil.walk_packages(wsendpoints.__path__, "wsendpoints."):
        module = importlib.import_module(info.name)
        assert isinstance(getattr(module, "__all__", None), list), info.name
