"""`rft export`: a trained model as a GGUF file for llama.cpp, Ollama and LM Studio."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from rft_cli.cli import render
from rft_cli.cli.app import app


class GgufType(str, Enum):
    f16 = "f16"
    q8_0 = "q8_0"


@app.command("export")
def export(
    model: Annotated[
        str,
        typer.Argument(
            metavar="RUN_OR_CHECKPOINT",
            help="A run folder (its final/), a checkpoint (LoRA adapters are merged), a model folder or a .gguf file.",
        ),
    ],
    gguf: Annotated[
        Path,
        typer.Option("--gguf", metavar="OUT.gguf", dir_okay=False, help="The GGUF file to write."),
    ],
    quantization: Annotated[
        GgufType,
        typer.Option(
            "--type",
            help="f16: float16 weights (2 bytes each); q8_0: 8-bit blocks (about 1.06 bytes each).",
        ),
    ] = GgufType.f16,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT.gguf if it exists.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of the path.")
    ] = False,
) -> None:
    """Write a model as one GGUF file (Llama architecture, byte-level BPE tokenizer), with its chat
    template and EOS/BOS ids, for llama.cpp, Ollama and LM Studio; print its path.

    Example:

        rft export runs/smollm2 --gguf smollm2-tuned.gguf --type q8_0
    """
    from rft_cli.gguf_export import export_gguf

    render.stderr.print(f"Exporting {render.safe(model)} as {quantization.value} GGUF")
    report = export_gguf(model, gguf, quantization.value, force=force)
    if as_json:
        render.json_document(report.to_dict())
        return
    render.stderr.print(
        f"{report.tensors} tensors ({report.quantized_tensors} q8_0), {report.parameters:,} "
        f"parameters, {report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s"
    )
    print(report.path)
