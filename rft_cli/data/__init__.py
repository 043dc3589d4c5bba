"""Datasets: the JSONL row contract (`records`), `validate_dataset` (`validation`, with `scanning`,
`checks`, `overlap`), converters (`reft`, `openai_rows`) and built-in tasks (`synthetic`,
`lookup_task`)."""
