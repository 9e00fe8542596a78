"""Finding, fetching and verifying the pose model described in ``models/manifest.json``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = PROJECT_ROOT / "models"
DEFAULT_MODEL = "movenet_singlepose_lightning_int8"
ENV_VAR = "RACKWATCH_MODEL"


class ModelError(RuntimeError):
    """The model is missing or damaged; the message says where to get it and where to put it."""


def manifest(name: str = DEFAULT_MODEL) -> dict:
    path = MODELS_DIR / "manifest.json"
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
    return (f"Get it with `rackwatch models fetch` (downloads {entry['url']}), or copy "
            f"{entry['file']} into {MODELS_DIR}/ or point {ENV_VAR} at it.")


def find_model(configured: str | Path | None = None, name: str = DEFAULT_MODEL) -> Path:
    """The model file to use: ``configured``, else $RACKWATCH_MODEL, else ``models/``; checked against the manifest."""
    entry = manifest(name)
    if configured:
        path, origin = Path(configured), "the configured model path"
    elif os.environ.get(ENV_VAR):
        path, origin = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        path, origin = MODELS_DIR / entry["file"], "the project's models folder"
    if not path.is_file():
        raise ModelError(f"No pose model at {path} ({origin}). {_how_to_get(entry)}")
    if path.stat().st_size != entry["size"] or sha256_of(path) != entry["sha256"]:
        raise ModelError(f"The model at {path} is damaged or not the expected file (its checksum does not match "
                         f"the manifest). Delete it and fetch it again. {_how_to_get(entry)}")
    return path


def fetch(source_dir: Path | None = None, name: str = DEFAULT_MODEL, timeout: float = 60.0) -> Path:
    """Put a verified copy of the model into ``models/``, from ``source_dir`` or else from the manifest's URL.

    The file is written next to its destination under a temporary name and renamed only once its checksum is
    right, so an interrupted download never leaves a half file where the model should be.
    """
    entry = manifest(name)
    target = MODELS_DIR / entry["file"]
    if target.is_file() and sha256_of(target) == entry["sha256"]:
        return target
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=MODELS_DIR, suffix=".part")
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
