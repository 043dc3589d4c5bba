"""`rft data`: make the built-in arithmetic task and convert ReFT's published data files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rft_cli.cli import render
from rft_cli.cli.app import app

data_app = typer.Typer(
    help=(
        "Make and convert datasets (the built-in arithmetic task, ReFT's SVAMP/GSM8K files).\n\n"
        "Example: rft data make-arith data/arith ; rft data convert-reft svamp_nl.json data/svamp/train.jsonl"
    ),
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command("convert-reft")
def convert_reft_cmd(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT.json",
            exists=True,
            dir_okay=False,
            help="A ReFT data file (a JSON array).",
        ),
    ],
    output_path: Annotated[
        Path,
        typer.Argument(
            metavar="OUTPUT.jsonl", dir_okay=False, help="Where to write contract JSONL."
        ),
    ],
    keep_duplicates: Annotated[
        bool,
        typer.Option("--keep-duplicates", help="Keep repeated questions (dropped by default)."),
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Write at most this many rows.")] = None,
) -> None:
    """Convert one of ReFT's JSON files (mwp_ReFT data/*.json) into the dataset contract.

    The question becomes the user message and `answer_value` the `reference_answer`.

    A chain of thought (`answer_cot`, training files) becomes the `solution`, ending in `#### X`.

    Example:

        rft data convert-reft svamp_nl.json data/svamp/train.jsonl

        rft data convert-reft svamp_test_set.json data/svamp/test.jsonl
    """
    from rft_cli.data.reft import convert_reft

    report = convert_reft(input_path, output_path, dedupe=not keep_duplicates, limit=limit)
    render.stdout.print(
        f"Wrote {report.rows} rows ({report.with_solution} with a solution) to {render.safe(report.output)}"
    )
    if report.duplicates:
        render.warning(
            f"dropped {len(report.duplicates)} repeated questions (first: {report.duplicates[0]}); "
            "pass --keep-duplicates to keep them"
        )


@data_app.command("make-arith")
def make_arith_cmd(
    output_dir: Annotated[
        Path, typer.Argument(file_okay=False, help="Folder for train.jsonl and valid.jsonl.")
    ] = Path("data/arith"),
    n_train: Annotated[int, typer.Option("--train", min=1, help="Training rows.")] = 4000,
    n_valid: Annotated[
        int, typer.Option("--valid", min=1, help="Validation rows (no question shared with train).")
    ] = 400,
    n_test: Annotated[
        int,
        typer.Option(
            "--test",
            min=0,
            help="Held-out test rows in test.jsonl (no question shared with train or valid); 0: none.",
        ),
    ] = 0,
    style: Annotated[
        str | None,
        typer.Option(
            help="'equation' (\"12+47+30=?\") or 'words' (a sentence) [default: equation]."
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, max=8, help="Operations per problem [default: 4].")
    ] = None,
    max_start: Annotated[
        int | None, typer.Option(min=10, help="Largest starting number [default: 99].")
    ] = None,
    max_operand: Annotated[
        int | None, typer.Option(min=1, help="Largest number added or taken away [default: 9].")
    ] = None,
    max_total: Annotated[
        int | None, typer.Option(min=2, help="Largest running total [default: 150].")
    ] = None,
    ops: Annotated[
        str | None, typer.Option(help="Operations: '+', '-' or '+-' [default: +].")
    ] = None,
    one_line_share: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help=(
                'Share of demonstrations that write the whole sum on one line ("19+8+6+6+9=48.") instead of step by step '
                "[default: 0.65]."
            ),
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Generate the built-in arithmetic problems (chain-of-thought demonstrations, `#### N` answers).

    With no options this regenerates the shipped data/arith/train.jsonl and valid.jsonl byte for byte.

    Example:

        rft data make-arith data/arith

        rft data make-arith /tmp/words --style words --steps 3 --max-start 30 --max-operand 9 --max-total 50 --ops +-
    """
    from dataclasses import replace

    from rft_cli.data.synthetic import DEFAULT_SPEC, generate_arith, write_jsonl

    given: dict[str, Any] = {
        "style": style,
        "steps": steps,
        "max_start": max_start,
        "max_operand": max_operand,
        "max_total": max_total,
        "ops": ops,
        "one_line_share": one_line_share,
    }
    spec = replace(DEFAULT_SPEC, **{k: v for k, v in given.items() if v is not None})
    # The test rows are drawn after the validation rows, so --test leaves train and valid as they were.
    train_rows, held_out = generate_arith(n_train, n_valid + n_test, seed=seed, spec=spec)
    write_jsonl(train_rows, output_dir / "train.jsonl")
    write_jsonl(held_out[:n_valid], output_dir / "valid.jsonl")
    if n_test:
        write_jsonl(held_out[n_valid:], output_dir / "test.jsonl")
    render.stdout.print(
        f"Wrote {len(train_rows)} training, {n_valid} validation"
        + (f" and {n_test} test" if n_test else "")
        + f" rows to {render.safe(output_dir)}"
    )


@data_app.command("make-lookup")
def make_lookup_cmd(
    output_dir: Annotated[
        Path,
        typer.Argument(
            file_okay=False,
            help="Folder for train.jsonl, valid.jsonl, lookup.py, tools.yaml and grader.yaml.",
        ),
    ] = Path("data/lookup"),
    n_train: Annotated[int, typer.Option("--train", min=1, help="Training rows.")] = 2000,
    n_valid: Annotated[
        int,
        typer.Option("--valid", min=1, help="Validation rows (questions no training row asks)."),
    ] = 200,
    terms: Annotated[int, typer.Option(min=1, max=6, help="Keys per question.")] = 2,
    keys: Annotated[int, typer.Option(min=2, max=676, help="Keys in the table.")] = 100,
    max_value: Annotated[
        int, typer.Option(min=1, help="Largest value in the table (values are 1 to this).")
    ] = 49,
    shared_keys: Annotated[
        bool,
        typer.Option(
            "--shared-keys/--separate-keys",
            help="Every key in both sets, only the questions disjoint (--shared-keys), or "
            "validation questions over keys no training row names (--separate-keys).",
        ),
    ] = True,
    extra_call_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of the look-up demonstrations that look one key up twice before answering.",
        ),
    ] = 0.25,
    total_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of demonstrations that ask the `total` tool for the sum in one call "
            "instead of looking each key up (0: no `total` tool).",
        ),
    ] = 1 / 3,
    seed: Annotated[int, typer.Option(help="Random seed (the table and the questions).")] = 0,
) -> None:
    """Generate the built-in tool task: sums of values only the task's tools know.

    A question names keys ("ka+mo=?"). Two in three demonstrations call `lookup` once per key and
    add the values ("17+42=59. #### 59"); one in three (--total-share) asks `total` for the sum in
    one call ("#### 59"). The table is only in lookup.py; every key appears in training and no
    validation question asks what a training question asks, or with --separate-keys validation
    questions use keys no training row names (a quarter of the keys). With no options this
    regenerates the shipped data/lookup byte for byte.

    Example:

        rft data make-lookup data/lookup

        rft validate data/lookup/train.jsonl --valid data/lookup/valid.jsonl --tools data/lookup/tools.yaml --grader data/lookup/grader.yaml
    """
    from rft_cli.data.lookup_task import LookupSpec, write_lookup_task

    spec = LookupSpec(
        keys=keys,
        valid_keys=max(1, keys // 4),
        terms=terms,
        max_value=max_value,
        extra_call_share=extra_call_share,
        shared_keys=shared_keys,
        total_share=total_share,
    )
    n_train, n_valid = write_lookup_task(output_dir, n_train, n_valid, seed, spec)
    render.stdout.print(
        f"Wrote {n_train} training and {n_valid} validation rows, lookup.py, tools.yaml and grader.yaml to {render.safe(output_dir)}"
    )
