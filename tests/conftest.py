"""Shared fixtures: an isolated RFT_HOME, and a tiny model saved once per test session."""

from __future__ import annotations

import os
import weakref

import pytest
import typer.testing
from hypothesis import settings

# Property tests and fuzzers replay the same examples on every run, so CI is reproducible;
# HYPOTHESIS_PROFILE=explore draws fresh random examples for a longer local hunt.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Two cores: keep torch from oversubscribing them when tests run model code.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


# Typer turns the app into its click command on every CliRunner.invoke, evaluating the annotations
# of every command's parameters (50 ms, most of a quick command's test); an `rft` process does it
# once. The tests build it once per app too: hundreds of invocations, the same command object.
_commands: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_build_command = typer.testing._get_command


def _command_of(app: typer.Typer):
    if app not in _commands:
        _commands[app] = _build_command(app)
    return _commands[app]


typer.testing._get_command = _command_of


@pytest.fixture(autouse=True)
def _rft_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RFT_HOME", str(tmp_path / "rft_home"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A 2-layer Llama (hidden size 16) and the character tokenizer, saved with save_pretrained."""
    from rft_cli.tiny import save_tiny

    return save_tiny(str(tmp_path_factory.mktemp("tiny") / "model"), "llama-test", seed=0)


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    """family -> a saved tiny model of that transformers family (rft_cli.tiny.TINY_FAMILIES), built once."""
    from rft_cli.tiny import save_tiny_family

    made: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in made:
            made[family] = save_tiny_family(
                str(tmp_path_factory.mktemp(family) / "model"), family, seed=0
            )
        return made[family]

    return get


@pytest.fixture(scope="session")
def hub_like_model_dir(tmp_path_factory) -> str:
    """A hub instruct folder in miniature: tiny Qwen2, byte-level BPE, ChatML, <|im_end|> EOS distinct
    from the <|endoftext|> pad, and Qwen2.5-Instruct's generation_config.json (two EOS ids, top_k 20...)."""
    from tests.hub_like import save_hub_like

    return save_hub_like(str(tmp_path_factory.mktemp("hub_like") / "model"), "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """(gguf file, the Hugging Face folder it was written from): a tiny Llama with a byte-level BPE
    tokenizer and ChatML, written by tests/gguf_fakes.py (not by rft's exporter)."""
    from tests.gguf_fakes import build_tiny_llama, write_gguf

    folder = tmp_path_factory.mktemp("tiny_gguf")
    model, tokenizer = build_tiny_llama(seed=0)
    model.save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    return str(write_gguf(model, tokenizer, folder / "tiny-llama.gguf")), str(folder / "hf")
