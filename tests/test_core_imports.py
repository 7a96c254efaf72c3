"""The core must import no web framework and no optional service client."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("django", "flask", "starlette", "werkzeug", "asgiref", "redis", "fastapi")


def test_import_cacheplug_pulls_in_no_framework():
    code = (
        "import sys, json, cacheplug, cacheplug.integrations;"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert "cacheplug" in loaded
    assert not loaded & set(FORBIDDEN), f"the core imported {sorted(loaded & set(FORBIDDEN))}"


def test_package_ships_py_typed():
    from importlib.resources import files

    import cacheplug

    assert files(cacheplug).joinpath("py.typed").is_file()


def test_integrations_installed_under_cacheplug_namespace():
    import cacheplug.integrations

    assert cacheplug.integrations.__name__ == "cacheplug.integrations"
