"""The docs site builds under ``mkdocs build --strict``, and the references keep up with the code.

The reference pages are written by hand; these tests fail when the code grows an
option, a setting, an environment variable or a system check id that the pages do not
mention, so they cannot silently fall behind.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cacheplug.http import HttpCachePolicy
from cacheplug.runtime import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONFIGURATION = (DOCS / "configuration.md").read_text()
TROUBLESHOOTING = (DOCS / "troubleshooting.md").read_text()


def build(config: Path, site_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``mkdocs build --strict`` in a subprocess, as CI and a user would."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(config),
            "--site-dir",
            str(site_dir),
        ],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_site_builds_strict(tmp_path: Path) -> None:
    result = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr + result.stdout
    for page in ("configuration", "troubleshooting", "deploy"):
        assert (tmp_path / "site" / page / "index.html").is_file()
    # The hook that renders links leaving docs/ is not published as a page or a file.
    assert not (tmp_path / "site" / "_hooks").exists()


@pytest.fixture
def docs_copy(tmp_path: Path) -> Path:
    """A copy of the docs project (config, pages, hook) in a directory of its own."""
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "README.md").write_text("# readme\n")
    return tmp_path


def test_links_leaving_docs_render_as_repository_paths(docs_copy: Path) -> None:
    index = docs_copy / "docs" / "index.md"
    index.write_text(
        index.read_text()
        + "\nSee [the README](../README.md) and [its intro](../README.md#readme).\n"
        + "\n```markdown\n[kept in code](../README.md)\n```\n"
    )
    result = build(docs_copy / "mkdocs.yml", docs_copy / "site")
    assert result.returncode == 0, result.stderr + result.stdout
    html = (docs_copy / "site" / "index.html").read_text()
    assert "See the README (<code>README.md</code>)" in html
    assert "its intro (<code>README.md</code>)" in html
    assert "[kept in code](../README.md)" in html  # code blocks are left as written


def test_links_to_missing_files_still_fail_the_build(docs_copy: Path) -> None:
    index = docs_copy / "docs" / "index.md"
    index.write_text(index.read_text() + "\nSee [gone](../NO_SUCH_FILE.md).\n")
    result = build(docs_copy / "mkdocs.yml", docs_copy / "site")
    assert result.returncode != 0
    assert "NO_SUCH_FILE.md" in result.stderr


def test_links_to_missing_anchors_fail_the_build(docs_copy: Path) -> None:
    index = docs_copy / "docs" / "index.md"
    index.write_text(index.read_text() + "\nSee [options](configuration.md#no-such-heading).\n")
    result = build(docs_copy / "mkdocs.yml", docs_copy / "site")
    assert result.returncode != 0
    assert "no-such-heading" in result.stderr


@pytest.mark.parametrize("option", sorted(DEFAULTS))
def test_configuration_documents_every_runtime_option(option: str) -> None:
    assert f"`{option}`" in CONFIGURATION


def test_configuration_documents_every_http_policy_option() -> None:
    names = [f.name for f in dataclasses.fields(HttpCachePolicy) if not f.name.startswith("_")]
    assert names, "HttpCachePolicy has no public fields?"
    missing = [name for name in names if f"`{name}`" not in CONFIGURATION]
    assert not missing, f"docs/configuration.md does not mention HttpCachePolicy {missing}"


def test_configuration_documents_every_asgi_middleware_argument() -> None:
    from cacheplug.integrations.asgi import CachePlugMiddleware

    params = [p for p in inspect.signature(CachePlugMiddleware).parameters if p != "app"]
    missing = [name for name in params if f"`{name}`" not in CONFIGURATION]
    assert not missing, f"docs/configuration.md does not mention CachePlugMiddleware {missing}"


def test_configuration_documents_every_django_option() -> None:
    from cacheplug.integrations.django.options import DJANGO_OPTIONS, PLUG_OPTIONS

    names = [*DJANGO_OPTIONS, *PLUG_OPTIONS, "EVICTION"]
    missing = [name for name in names if f"`{name}`" not in CONFIGURATION]
    assert not missing, f"docs/configuration.md does not mention OPTIONS {missing}"


def test_configuration_documents_every_flask_key() -> None:
    from cacheplug.integrations.flask.extension import FLASK_KEYS

    keys = [*FLASK_KEYS, *(f"CACHEPLUG_{option.upper()}" for option in DEFAULTS)]
    missing = [key for key in keys if f"`{key}`" not in CONFIGURATION]
    assert not missing, f"docs/configuration.md does not mention Flask keys {missing}"


def _names_in_code(pattern: str, *folders: str) -> set[str]:
    found: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            found.update(re.findall(pattern, path.read_text()))
    return found


def test_configuration_documents_every_cacheplug_setting_and_variable() -> None:
    # Settings (Django), config keys (Flask) and environment variables all share the
    # CACHEPLUG_ prefix in the code.
    names = _names_in_code(r"\bCACHEPLUG_[A-Z][A-Z_]*[A-Z]\b", "cacheplug", "integrations")
    assert "CACHEPLUG_SECRET" in names
    assert "CACHEPLUG_DASHBOARD_TOKEN" in names
    missing = sorted(name for name in names if name not in CONFIGURATION)
    assert not missing, f"docs/configuration.md does not mention {missing}"


def test_troubleshooting_lists_every_django_check_id() -> None:
    source = (ROOT / "integrations" / "django" / "checks.py").read_text()
    ids = set(re.findall(r"cacheplug\.[EW]\d{3}", source))
    assert {"cacheplug.E001", "cacheplug.W001"} <= ids
    missing = sorted(check for check in ids if f"`{check}`" not in TROUBLESHOOTING)
    assert not missing, f"docs/troubleshooting.md does not explain {missing}"


def test_deploy_has_the_failure_mode_table() -> None:
    deploy = (DOCS / "deploy.md").read_text()
    table = deploy.split("## Failure modes and what each does", 1)[1]
    for failure in (
        "Redis down",
        "disk full",
        "not writable",
        "corrupt or tampered",
        "full worker queue",
        "cannot be pickled",
        "process killed",
    ):
        assert failure in table, failure
