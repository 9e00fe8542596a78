"""Finding the system tools the deployment tests check with (systemd-analyze, shellcheck, cloud-init, netplan).

On a developer's machine a missing tool skips its test with the apt package to install; under ``CI=true`` it
fails instead, so a CI machine without the tool can never go quietly green. ``deploy/dev-setup.sh`` installs them.
"""

from __future__ import annotations

import os
import shutil


import real_parts


def need_tool(name: str, apt_package: str) -> str:
    """The full path of ``name``; skip (fail under CI) with the package that provides it when it is missing."""
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)),
                                      None)
    if path:
        return path
    return real_parts.require(None, f"{name} is not installed", f"apt-get install {apt_package} (deploy/dev-setup.sh does it)")
