"""Finding, fetching and verifying the pose model described in the manifest.

The manifest (name, download URL, sha256, size) ships inside the package as ``rackwatch/model_manifest.json``,
so an installed rackwatch can verify its model without the project folder; the project's ``models/manifest.json``
is a link to that same file. The model file itself is not in the package (it is Google's, and 3 MB): it is
fetched into the first folder of :func:`rackwatch.paths.model_dirs` that applies (see ``models/README.md``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from importlib import resources
from pathlib import Path

from . import paths

DEFAULT_MODEL = "movenet_singlepose_lightning_int8"
ENV_VAR = "RACKWATCH_MODEL"


class ModelError(RuntimeError):
    """The model is missing or damaged; the message says where to get it and where to put it."""


def manifest(name: str = DEFAULT_MODEL) -> dict:
    path = resources.files("rackwatch") / "model_manifest.json"
    try:
        return json.loads(path.read_text())[name]
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError(f"The model manifest {path} is missing or has no entry {name!r}.") from exc


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _how_to_get(entry: dict) -> str:
    return (f"Get it with `rackwatch models fetch` (downloads {entry['url']} into {paths.fetch_dir()}/), or "
            f"copy {entry['file']} there, or point {ENV_VAR} at it.")


def find_model(configured: str | Path | None = None, name: str = DEFAULT_MODEL) -> Path:
    """The model file to use, checked against the manifest: ``configured``, else $RACKWATCH_MODEL, else the first
    of :func:`rackwatch.paths.model_dirs` that holds it (the checkout's ``models/``, the user's data folder,
    ``/var/lib/rackwatch/models``)."""
    entry = manifest(name)
    if configured:
        path, origin = Path(configured), "the configured model path"
    elif os.environ.get(ENV_VAR):
        path, origin = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        folders = paths.model_dirs()
        path = next((folder / entry["file"] for folder in folders if (folder / entry["file"]).is_file()),
                    folders[0] / entry["file"])
        origin = "looked for in " + ", ".join(str(folder) for folder in folders)
    if not path.is_file():
        raise ModelError(f"No pose model at {path} ({origin}). {_how_to_get(entry)}")
    if path.stat().st_size != entry["size"] or sha256_of(path) != entry["sha256"]:
        raise ModelError(f"The model at {path} is damaged or not the expected file (its checksum does not match "
                         f"the manifest). Delete it and fetch it again. {_how_to_get(entry)}")
    return path


def fetch(source_dir: Path | None = None, name: str = DEFAULT_MODEL, timeout: float = 60.0) -> Path:
    """Put a verified copy of the model into :func:`rackwatch.paths.fetch_dir` (``models/`` in a checkout), from
    ``source_dir`` or else from the manifest's URL.

    The file is written next to its destination under a temporary name and renamed only once its checksum is
    right, so an interrupted download never leaves a half file where the model should be.
    """
    entry = manifest(name)
    folder = paths.fetch_dir()
    target = folder / entry["file"]
    if target.is_file() and sha256_of(target) == entry["sha256"]:
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, suffix=".part")
    except OSError as exc:
        raise ModelError(f"Cannot write the model into {folder} ({exc.strerror}). Run the fetch as a user who "
                         "may write there (root, for /var/lib/rackwatch), or set XDG_DATA_HOME to a folder "
                         "of your own.") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if source_dir is not None:
                source = Path(source_dir) / entry["file"]
                if not source.is_file():
                    raise ModelError(f"{source} does not exist.")
                with open(source, "rb") as f:
                    shutil.copyfileobj(f, out)
            else:
                try:
                    with urllib.request.urlopen(entry["url"], timeout=timeout) as response:
                        shutil.copyfileobj(response, out)
                except OSError as exc:
                    raise ModelError(f"Could not download {entry['url']} ({exc}). On a machine without internet "
                                     "access, copy the file over and use `rackwatch models fetch --from DIR`.") from exc
        if sha256_of(tmp) != entry["sha256"]:
            raise ModelError(f"The file fetched for {name} has the wrong checksum; it was not installed. "
                             "Check the source and try again.")
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)
