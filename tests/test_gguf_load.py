"""A `.gguf` file wherever a model is named: converted once into a plain Hugging Face folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli import gguf_load
from rft_cli.cli import app
from rft_cli.config import ModelSettings
from rft_cli.errors import ConfigError
from rft_cli.generation import resolve_model_path

runner = CliRunner()
CHAT = [
    {"role": "user", "content": "Mary has 5 apples and buys 3 more. How many?"},
    {"role": "assistant", "content": "5 + 3 = 8. The answer is 8."},
]


def _logits(folder: str, ids: list[int]):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_a_gguf_file_becomes_a_plain_hugging_face_folder_in_the_cache(tiny_gguf, tmp_path):
    """Before: `rft eval --model X.gguf` said "is a file, not a model folder". Now the file converts
    into $RFT_HOME/cache/gguf: same logits, tokens, chat template and EOS as the model it was written
    from, and a config without `quantization_config`, so it saves and trains like any folder."""
    from transformers import AutoTokenizer

    path, original = tiny_gguf
    folder = resolve_model_path(path)
    assert Path(folder).parent == tmp_path / "rft_home" / "cache" / "gguf"
    config = json.loads((Path(folder) / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    mine, theirs = AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(original)
    ids = theirs.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    assert mine.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"] == ids
    assert mine.chat_template == theirs.chat_template
    assert (mine.eos_token, mine.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert (_logits(folder, ids) - _logits(original, ids)).abs().max().item() < 1e-5
    generation = json.loads((Path(folder) / "generation_config.json").read_text())
    assert generation["eos_token_id"] == theirs.eos_token_id


def test_smollm_pre_split_puts_digits_apart_as_llama_cpp_does(tmp_path):
    """SmolLM2's file says `tokenizer.ggml.pre: smollm` (each digit alone, then GPT-2's split), which
    transformers' reader ignores: "100" became one token where llama.cpp and SmolLM's own tokenizer
    give three."""
    from transformers import AutoTokenizer

    from tests.gguf_fakes import build_tiny_llama, write_gguf

    model, tokenizer = build_tiny_llama()
    text = "There are 12 birds and 100 eggs"
    assert "Ġ12" in tokenizer.tokenize(text)  # this vocabulary has merged digits
    for pre, tokens in (("gpt-2", tokenizer.tokenize(text)), ("smollm", None)):
        folder = resolve_model_path(write_gguf(model, tokenizer, tmp_path / f"{pre}.gguf", pre=pre))
        split = AutoTokenizer.from_pretrained(folder).tokenize(text)
        if tokens is not None:
            assert split == tokens
        else:
            assert "Ġ12" not in split and split[split.index("Ġare") + 1 :][:3] == ["Ġ", "1", "2"]


def test_the_second_load_reuses_the_conversion(tiny_gguf, monkeypatch):
    path, _ = tiny_gguf
    first = resolve_model_path(path)
    monkeypatch.setattr(gguf_load, "convert", _fail)
    assert resolve_model_path(path) == first


def _fail(*args, **kwargs):
    raise AssertionError("converted again")


def test_an_interrupted_conversion_is_redone(tiny_gguf):
    """A folder without the marker (a conversion killed half way) is not trusted."""
    path, _ = tiny_gguf
    folder = Path(resolve_model_path(path))
    (folder / gguf_load.MARKER).unlink()
    (folder / "model.safetensors").write_bytes(b"cut short")
    assert resolve_model_path(path) == str(folder)
    assert (folder / gguf_load.MARKER).is_file()
    assert (folder / "model.safetensors").stat().st_size > 1000


def test_a_conversion_another_process_finished_meanwhile_is_used(tmp_path, monkeypatch):
    """Several processes (`accelerate launch`) may convert the same file at once: the first to
    finish wins, the others use its folder instead of failing on the rename."""
    import os

    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF stand-in")
    marker = json.dumps({"layout": gguf_load._LAYOUT})

    def convert(source, target, digest=""):
        target.mkdir(parents=True)
        (target / gguf_load.MARKER).write_text(marker)

    def replace_after_the_other(source, target, real=os.replace):
        Path(target).mkdir(parents=True)
        (Path(target) / gguf_load.MARKER).write_text(marker)
        (Path(target) / "theirs").write_text("")
        real(source, target)

    monkeypatch.setattr(gguf_load, "convert", convert)
    monkeypatch.setattr(gguf_load.os, "replace", replace_after_the_other)
    folder = gguf_load.hf_folder(path)
    assert (folder / "theirs").is_file()
    assert [p.name for p in gguf_load.cache_root().iterdir()] == [folder.name]


def test_a_changed_file_converts_again(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(Path(path).read_bytes())
    assert resolve_model_path(copy) == resolve_model_path(path)  # keyed by content, not by path
    with open(copy, "ab") as handle:
        handle.write(b"\0" * 32)  # still a valid file: GGUF ignores trailing bytes
    assert resolve_model_path(copy) != resolve_model_path(path)


def test_a_cache_that_cannot_be_written_is_an_error(tiny_gguf, tmp_path, monkeypatch):
    from rft_cli.errors import RftError

    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("RFT_HOME", str(blocker))
    with pytest.raises(RftError, match="point RFT_HOME elsewhere"):
        resolve_model_path(tiny_gguf[0])


def _write_gguf(path: Path, architecture: str, tensor) -> str:
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_tensor("token_embd.weight", tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_an_unsupported_architecture_and_tensor_type_get_one_error_naming_what_is_supported(
    tmp_path,
):
    import numpy as np

    path = _write_gguf(tmp_path / "odd.gguf", "rwkv6", np.zeros((4, 32), dtype=np.int8))
    with pytest.raises(ConfigError) as caught:
        resolve_model_path(path)
    message = str(caught.value)
    assert "architecture 'rwkv6'" in message and "llama, mamba, minimax_m2, mistral" in message
    assert "tensor type(s) I8 cannot be dequantized" in message and "Q4_1" in message
    assert not (tmp_path / "rft_home" / "cache" / "gguf").exists() or not any(
        (tmp_path / "rft_home" / "cache" / "gguf").iterdir()
    )


def test_a_file_that_is_not_gguf_is_a_config_error(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"not a gguf file at all")
    with pytest.raises(ConfigError, match="not a readable GGUF file"):
        resolve_model_path(path)


def test_a_folder_holding_a_gguf_names_it(tiny_gguf):
    path, _ = tiny_gguf
    with pytest.raises(ConfigError, match="holds tiny-llama.gguf: pass that file itself"):
        resolve_model_path(Path(path).parent)


def test_rft_eval_takes_a_gguf_model(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"{n} + 1?"}], "answer": n + 1})
            + "\n"
            for n in range(3)
        )
    )
    grader = tmp_path / "grader.yaml"
    grader.write_text(
        'type: numeric\nname: answer\ninput: "{{ sample.output_text }}"\nreference: "{{ item.answer }}"\n'
    )
    result = runner.invoke(
        app,
        [
            *("eval", "--model", path, "--data", str(data), "--grader", str(grader)),
            *("--max-new-tokens", "4", "--format", "json"),
        ],
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["models"]
    assert report["model"] == path and report["rows"] == 3 and report["generated_tokens"] > 0


def test_rft_eval_refuses_an_unreadable_gguf_with_exit_2(tmp_path):
    import numpy as np

    path = _write_gguf(tmp_path / "odd.gguf", "rwkv6", np.zeros((4, 32), dtype=np.float32))
    data = tmp_path / "rows.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}], "answer": 1}\n')
    grader = tmp_path / "grader.yaml"
    grader.write_text('type: string_check\nname: eq\ninput: "{{ sample.output_text }}"\n')
    grader.write_text(grader.read_text() + 'reference: "1"\noperation: eq\n')
    result = runner.invoke(
        app, ["eval", "--model", path, "--data", str(data), "--grader", str(grader)]
    )
    assert result.exit_code == 2, result.output
    assert "architecture 'rwkv6' is not one transformers reads" in result.output
    assert "Traceback" not in result.output


def test_model_tokenizer_takes_a_gguf_file(tiny_gguf):
    from rft_cli.training.models import load_tokenizer

    path, original = tiny_gguf
    tokenizer = load_tokenizer(ModelSettings(name=original, tokenizer=path))
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template


def test_a_local_judge_can_be_a_gguf_file(tiny_gguf):
    from rft_cli.graders import build_grader

    path, _ = tiny_gguf
    grader = build_grader(
        {
            "type": "label_model",
            "model": path,
            "max_new_tokens": 4,
            "input": [{"role": "user", "content": "Label {{ sample.output_text }}"}],
            "labels": ["qzxv_pass", "qzxv_fail"],
            "passing_labels": ["qzxv_pass"],
        }
    )
    assert Path(grader.judge.model_name) == Path(resolve_model_path(path))
    result = grader.grade("hello", {})  # a random model answers no label: the judge ran locally
    assert result.reward == 0.0 and result.errors == {"model_grader_parse_error": 1}


def test_a_gguf_judge_the_transformers_reader_refuses_is_a_grader_error(tmp_path):
    import numpy as np

    from rft_cli.errors import GraderError
    from rft_cli.graders import build_grader

    path = _write_gguf(tmp_path / "odd.gguf", "rwkv6", np.zeros((4, 32), dtype=np.float32))
    spec = {"type": "score_model", "model": path, "input": [{"role": "user", "content": "x"}]}
    with pytest.raises(GraderError, match=r"^model: .*architecture 'rwkv6'"):
        build_grader(spec)
