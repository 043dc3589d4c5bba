"""`rft export --gguf`: read back with transformers' GGUF reader, the model and tokenizer match."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.errors import ConfigError
from rft_cli.gguf_export import export_gguf, rotary_rows
from tests.gguf_fakes import build_tiny_llama

runner = CliRunner()
CHAT = [{"role": "user", "content": "Mary has 5 apples and buys 3 more. How many apples now?"}]


@pytest.fixture(scope="module")
def sharp_llama(tmp_path_factory) -> str:
    """A tiny Llama folder whose q/k weights are scaled up, so attention (and the rotary order of
    their rows) decides the logits."""
    model, tokenizer = build_tiny_llama(seed=1)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(20)
            layer.self_attn.k_proj.weight.mul_(20)
    folder = tmp_path_factory.mktemp("sharp") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _read_back(path: Path):
    """The exported file through transformers' own GGUF reader (not rft's)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = {"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name}
    model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(**where)


def _ids(tokenizer) -> list[int]:
    return tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)[
        "input_ids"
    ]


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def _original(folder: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("quantization,tolerance", [("f16", 1e-2), ("q8_0", 0.2)])
def test_the_export_reads_back_with_the_same_logits_tokens_and_template(
    sharp_llama, tmp_path, quantization, tolerance
):
    """Measured on this model (logits up to 0.89): max |logit difference| 0.002 in f16, 0.08 in
    q8_0, and 0.77 with the q/k rows left in transformers' order."""
    out = tmp_path / "model.gguf"
    report = export_gguf(sharp_llama, out, quantization)
    original, tokenizer = _original(sharp_llama)
    back, back_tokenizer = _read_back(out)
    ids = _ids(tokenizer)
    assert _ids(back_tokenizer) == ids
    assert back_tokenizer.chat_template == tokenizer.chat_template
    assert back_tokenizer.eos_token == "<|im_end|>" and back.config.eos_token_id == 2
    difference = (_logits(back, ids) - _logits(original, ids)).abs().max().item()
    assert difference < tolerance
    assert (
        report.tensors == 2 + 9 * 2
    )  # embeddings, final norm, 9 per layer; the tied head is not written
    assert report.quantized_tensors == (7 * 2 + 1 if quantization == "q8_0" else 0)


def test_q_and_k_rows_are_stored_in_llama_cpp_rotary_order(sharp_llama, tmp_path):
    """transformers' reader undoes llama.cpp's order: every weight comes back where it was."""
    out = tmp_path / "model.gguf"
    export_gguf(sharp_llama, out, "f16")
    original, _ = _original(sharp_llama)
    back, _ = _read_back(out)
    theirs = back.state_dict()
    for name, weight in original.state_dict().items():
        assert torch.allclose(theirs[name], weight, rtol=1e-3, atol=1e-4), name


def test_rotary_rows_interleaves_each_heads_halves():
    rows = torch.arange(8.0).reshape(8, 1).numpy()  # 2 heads of 4 rows: halves [0,1|2,3], [4,5|6,7]
    assert rotary_rows(rows, heads=2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_lora_adapters_are_merged_before_export(sharp_llama, tmp_path):
    from peft import LoraConfig, get_peft_model

    original, tokenizer = _original(sharp_llama)
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapted = get_peft_model(original, config)
    checkpoint = tmp_path / "run" / "checkpoints" / "step-1"
    adapted.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    merged = adapted.merge_and_unload()
    ids = _ids(tokenizer)
    before = (_logits(_original(sharp_llama)[0], ids) - _logits(merged, ids)).abs().max().item()
    export_gguf(checkpoint, tmp_path / "adapter.gguf")
    back, _ = _read_back(tmp_path / "adapter.gguf")
    assert (_logits(back, ids) - _logits(merged, ids)).abs().max().item() < 1e-2 < before


def test_a_run_folder_means_its_final_model(sharp_llama, tmp_path):
    shutil.copytree(sharp_llama, tmp_path / "run" / "final")
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    export_gguf(tmp_path / "run", tmp_path / "final.gguf")
    (original, tokenizer), (back, _) = _original(sharp_llama), _read_back(tmp_path / "final.gguf")
    ids = _ids(tokenizer)
    assert (_logits(back, ids) - _logits(original, ids)).abs().max().item() < 1e-2


def _export(*args: str):
    return runner.invoke(app, ["export", *args])


def test_an_existing_file_is_kept_unless_force(sharp_llama, tmp_path):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"the user's file")
    result = _export(sharp_llama, "--gguf", str(out))
    assert result.exit_code == 2
    assert "already exists; pass --force to replace it" in result.output
    assert out.read_bytes() == b"the user's file"
    result = _export(sharp_llama, "--gguf", str(out), "--force", "--type", "q8_0", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["quantization"] == "q8_0" and doc["path"] == str(out)
    assert out.stat().st_size == doc["bytes"] and out.read_bytes()[:4] == b"GGUF"
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]  # no partial file left


def test_the_path_is_printed_and_progress_goes_to_stderr(sharp_llama, tmp_path):
    result = _export(sharp_llama, "--gguf", str(tmp_path / "m.gguf"))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "m.gguf")
    assert "Exporting" in result.stderr and "20 tensors (0 q8_0)" in result.stderr


def test_another_architecture_is_refused_naming_what_is_supported(hub_like_model_dir, tmp_path):
    result = _export(hub_like_model_dir, "--gguf", str(tmp_path / "q.gguf"))
    assert result.exit_code == 2
    assert "GGUF export supports the llama architecture, not 'qwen2'" in result.output
    assert not (tmp_path / "q.gguf").exists()


def test_a_tokenizer_that_is_not_byte_level_bpe_is_refused(tiny_model_dir, tmp_path):
    result = _export(tiny_model_dir, "--gguf", str(tmp_path / "t.gguf"))
    assert result.exit_code == 2
    assert "GGUF export supports byte-level BPE tokenizers" in result.output
    assert "not WordLevel" in result.output


def test_an_exported_file_loads_through_rft_like_the_original(sharp_llama, tmp_path):
    """Export, then `model.name: x.gguf`: the round trip rft users take to llama.cpp and back."""
    from rft_cli.generation import resolve_model_path

    export_gguf(sharp_llama, tmp_path / "model.gguf")
    folder = resolve_model_path(tmp_path / "model.gguf")
    (mine, tokenizer), (original, _) = _original(folder), _original(sharp_llama)
    ids = _ids(tokenizer)
    assert (_logits(mine, ids) - _logits(original, ids)).abs().max().item() < 1e-2


def test_the_pre_split_name_survives_a_round_trip_through_rft(tmp_path):
    """SmolLM2's `smollm` comes back as `smollm`, so llama.cpp splits digits as training did; GPT-2's
    split is `gpt-2` (llama.cpp refused the first exports, which said `gpt2`: "unknown pre-tokenizer
    type")."""
    from tests.gguf_fakes import write_gguf

    model, tokenizer = build_tiny_llama()
    source = write_gguf(model, tokenizer, tmp_path / "in.gguf", pre="smollm")
    assert export_gguf(source, tmp_path / "out.gguf").tokenizer_pre == "smollm"
    model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    assert export_gguf(tmp_path / "hf", tmp_path / "plain.gguf").tokenizer_pre == "gpt-2"


def _with_split(regex: str):
    from tokenizers import Regex, pre_tokenizers

    from tests.hub_like import build_bpe_tokenizer

    tokenizer = build_bpe_tokenizer()
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return tokenizer


def test_a_split_regex_transformers_knows_gets_its_llama_cpp_name():
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    from rft_cli.gguf_export import tokenizer_metadata

    tokenizer = _with_split(GGUF_PRE_TOKENIZER_SPLITS["llama-bpe"])
    assert tokenizer_metadata(tokenizer, 384, "m")["pre"] == "llama3"  # llama.cpp's llama3 group
    with pytest.raises(ConfigError, match="no llama.cpp pre-tokenizer name rft knows"):
        tokenizer_metadata(_with_split(r"\s+"), 384, "m")


@pytest.mark.slow
def test_llama_cpp_reads_the_export_like_transformers(sharp_llama, tmp_path):
    """llama.cpp's own reader: the same tokens for a ChatML prompt and logits within f16's error."""
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (it compiles llama.cpp on install)"
    )
    export_gguf(sharp_llama, tmp_path / "model.gguf", "f16")
    original, tokenizer = _original(sharp_llama)
    ids = _ids(tokenizer)
    llm = llama_cpp.Llama(str(tmp_path / "model.gguf"), n_ctx=128, logits_all=True, verbose=False)
    assert llm.tokenize(tokenizer.decode(ids).encode(), add_bos=False, special=True) == ids
    llm.eval(ids)
    scores = torch.tensor(llm.scores[: len(ids)])
    assert (scores - _logits(original, ids)[0]).abs().max().item() < 1e-2


def test_a_file_that_cannot_be_written_is_an_error_not_a_traceback(sharp_llama, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = _export(sharp_llama, "--gguf", str(blocker / "model.gguf"))
    assert result.exit_code == 1
    assert "cannot write the GGUF file" in result.output and "Traceback" not in result.output
