"""The run folder: everything one `rft train` run writes under `RUN/`, and the readers of it.

    checkpoints   RUN/checkpoints/ (step-N, sft, base) and RUN/final/: written whole or not at all
    metrics       RUN/metrics.jsonl, one flat JSON object per step, and the trackers beside it
    samples       RUN/samples/, the answers a run keeps (sampled in RL, greedy in evaluations)
    alarms        the detectors that read the metrics stream, live or afterwards
    summary       what `rft report` shows: a run's stages, best validation score and alarms

Nothing is imported here, so `import rft_cli.run_folder.metrics` loads only what it needs.
The layout is documented in docs/runs.md.
"""
