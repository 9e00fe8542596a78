"""The real parts the tests run against, and what a test does when one of them is missing.

The suite tests rackwatch against the real things it meets on a rack: a Mosquitto broker, the ``openssl``
command for TLS certificates, the labelled footage in ``../shared/footage``. When one is missing the tests that
need it cannot run. On a developer's laptop they are skipped, with a reason that says what to install; under
``CI=true`` they FAIL with the same words, so that a CI run can never go green with half the suite quietly left
out (``bash deploy/dev-setup.sh`` installs everything).

Every test that needs a real part asks for it here, through :func:`require` or one of the finders below; no test
calls ``pytest.skip`` for a missing part by itself.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
# The labelled footage: $RACKWATCH_FOOTAGE, else ../shared/footage beside the project (as the CLI finds it).
FOOTAGE = Path(os.environ.get("RACKWATCH_FOOTAGE") or PROJECT.parent / "shared" / "footage")
SETUP = "run `bash deploy/dev-setup.sh` (it installs what the tests need)"


def in_ci() -> bool:
    """Whether this run is a CI run: ``CI`` set to anything but empty, ``0``, ``false`` or ``no``."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(found, part: str, install: str, *, module_level: bool = False):
    """``found`` if it is truthy; otherwise stop the test: a failure under CI, a skip elsewhere.

    ``part`` names what is missing and where it was looked for; ``install`` says how to get it. With
    ``module_level`` it may be called while a test module is imported, and stops every test in it.
    """
    if found:
        return found
    message = f"{part}. Install it: {install}."
    if in_ci():
        pytest.fail(f"CI=true and a real part is missing: {message}", pytrace=False)
    pytest.skip(message, allow_module_level=module_level)


def find_program(name: str, env_var: str, *, fallback_dirs: tuple[str, ...] = ("/usr/sbin",)) -> tuple[str | None, str]:
    """Where ``name`` is, looked up as ``deploy/dev-setup.sh`` does: ``$env_var`` if set (and only there), else
    ``PATH``, else ``fallback_dirs`` (Debian puts the broker in ``/usr/sbin``, outside a user's PATH).

    Returns the path (or ``None``) and a description of where it was looked for, for the message.
    """
    override = os.environ.get(env_var)
    if override:
        return (override if Path(override).is_file() and os.access(override, os.X_OK) else None,
                f"${env_var}={override}")
    found = shutil.which(name)
    if found:
        return found, "PATH"
    for folder in fallback_dirs:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate), folder
    return None, f"PATH and {', '.join(fallback_dirs)} (or set ${env_var})"


def _program(name: str, env_var: str, install: str) -> str:
    path, where = find_program(name, env_var)
    return require(path, f"`{name}` was not found in {where}", install)


def mosquitto() -> str:
    """The Mosquitto broker binary (``$RACKWATCH_MOSQUITTO`` overrides the lookup)."""
    return _program("mosquitto", "RACKWATCH_MOSQUITTO", f"apt install mosquitto, or {SETUP}")


def mosquitto_passwd() -> str:
    """Mosquitto's password tool, for brokers with a password file (``$RACKWATCH_MOSQUITTO_PASSWD`` overrides)."""
    return _program("mosquitto_passwd", "RACKWATCH_MOSQUITTO_PASSWD", f"apt install mosquitto, or {SETUP}")


def openssl() -> str:
    """The ``openssl`` command, for throwaway TLS certificates (``$RACKWATCH_OPENSSL`` overrides)."""
    return _program("openssl", "RACKWATCH_OPENSSL", f"apt install openssl, or {SETUP}")


def footage() -> Path:
    """The labelled footage folder, ``../shared/footage`` beside the project (``$RACKWATCH_FOOTAGE`` overrides)."""
    return require(FOOTAGE if (FOOTAGE / "labels.json").is_file() else None,
                   f"the labelled footage is missing: no {FOOTAGE / 'labels.json'}",
                   "put the shared footage at ../shared/footage beside the project (or point $RACKWATCH_FOOTAGE "
                   "at it)")


def module(name: str, install: str, *, module_level: bool = False):
    """An importable module the tests need (a test extra, say), imported."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return require(None, f"the Python module {name!r} cannot be imported", install, module_level=module_level)
