"""Convert ReFT's JSON data files (github.com/lqtrung1998/mwp_ReFT) into the dataset contract.

ReFT ships one JSON array per split. Training files (`svamp_nl.json`, `gsm8k_nl.json`) hold
`item_id`, `question`, `answer_cot` (a natural-language chain of thought ending in
"Therefore, the answer is <X>.") and `answer_value`; test files hold no `answer_cot`.
Each record becomes one row:

    {"messages": [{"role": "user", "content": question}],
     "solution": "<chain of thought>\\n#### X",      # only when the record has `answer_cot`
     "reference_answer": "14", "id": "svamp_3735"}

The chain's closing sentence is rewritten as GSM8K's `#### X` answer line, so one `numeric`
grader reads both the demonstrations and the model's answers the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rft_cli.data.records import normalize_text
from rft_cli.data.synthetic import write_jsonl
from rft_cli.errors import DataError

# "Therefore, the answer is <203>." and the few "The answer is <4>." that close ReFT's chains.
_FINAL_ANSWER = re.compile(r"\s*(?:Therefore, t|T)he answer is\s*<?([^<>\n]*?)>?\.?\s*$")


@dataclass
class ConversionReport:
    """What a conversion did: rows written, duplicates dropped, and the output path."""

    output: Path
    rows: int = 0
    with_solution: int = 0
    duplicates: list[str] = field(default_factory=list)


def normalize_answer(value: str) -> str:
    """ReFT's `answer_value` as the shortest exact text: "14.0" -> "14", "3.5" stays, "1,200" -> "1200"."""
    text = value.strip().replace(",", "")
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else text


def convert_record(record: dict, where: str) -> dict:
    """One ReFT record as a contract row; raises DataError naming `where` when a field is missing."""
    for name in ("question", "answer_value"):
        if not isinstance(record.get(name), (str, int, float)) or not str(record[name]).strip():
            raise DataError(
                f'{where}: missing field "{name}" (ReFT records need "question" and "answer_value")'
            )
    row: dict = {"messages": [{"role": "user", "content": str(record["question"]).strip()}]}
    if isinstance(record.get("answer_cot"), str) and record["answer_cot"].strip():
        row["solution"] = _demonstration(record["answer_cot"], str(record["answer_value"]))
    row["reference_answer"] = normalize_answer(str(record["answer_value"]))
    if record.get("item_id") is not None:
        row["id"] = str(record["item_id"])
    return row


def _demonstration(cot: str, answer_value: str) -> str:
    """The chain of thought with its closing sentence rewritten as a `#### X` answer line."""
    match = _FINAL_ANSWER.search(cot)
    if match is None:
        return cot.rstrip() + f"\n#### {normalize_answer(answer_value)}"
    # Keep the chain's own conclusion (it may round differently from answer_value): it is what was demonstrated.
    return cot[: match.start()].rstrip() + f"\n#### {normalize_answer(match.group(1))}"


def load_reft_json(path: str | Path) -> list[dict]:
    """Read a ReFT JSON array; raises DataError if the file is missing, not JSON, or not a list of objects."""
    from rft_cli.files import read_json

    path = Path(path)
    data = read_json(
        path, "the ReFT file", DataError, limit=None, hint="pass one of ReFT's data/*.json files"
    )
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(
            f"{path}: expected a JSON array of objects (ReFT's format), found {type(data).__name__}"
        )
    return data


def convert_reft(
    input_path: str | Path,
    output_path: str | Path,
    *,
    dedupe: bool = True,
    limit: int | None = None,
) -> ConversionReport:
    """Convert a ReFT JSON file to contract JSONL; repeated questions are dropped unless `dedupe` is False."""
    records = load_reft_json(input_path)
    report = ConversionReport(output=Path(output_path))
    rows, seen = [], set()
    for index, record in enumerate(records):
        row = convert_record(record, f"{input_path} record {index}")
        key = normalize_text(row["messages"][0]["content"])
        if dedupe and key in seen:
            report.duplicates.append(row.get("id", str(index)))
            continue
        seen.add(key)
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    write_jsonl(rows, report.output)
    report.rows, report.with_solution = len(rows), sum("solution" in r for r in rows)
    return report
