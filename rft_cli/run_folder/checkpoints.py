"""Checkpoints: step-numbered folders written to a temporary name and renamed when complete.

A folder is complete when its marker file (`rft_meta.json`, written last) exists, so a crash while
writing never leaves a checkpoint that `--resume` would take. Each folder holds the model in
Hugging Face format at its top level (loadable with `AutoModelForCausalLM.from_pretrained`) and the
rft state beside it: value_head.pt, optimizer.pt, scheduler.pt, rng_state.pt, trainer_state.json.

The protocol, in the order a writer follows it, and what a `kill -9` at each point leaves:

1. Fill `.tmp-<name>/` (model, optimizer, RNG, ...). Killed here: a `.tmp-` folder that nothing
   reads (`step_checkpoints` matches only `<prefix><N>`), removed by the next prune.
2. Write `rft_meta.json` into it and fsync the file. The marker goes last because a complete-looking
   folder must really be complete: the marker's presence is the only test readers use.
3. Rename `.tmp-<name>` to `<name>` (atomic within one filesystem), then fsync the parent folder so
   the rename itself survives a power cut. Replacing an existing folder (`final/`) takes two renames
   through `.old-<name>`; a kill between them leaves `.old-<name>` and no `<name>` until the next
   `--resume` writes it again (guarantee 2 in docs/guarantees.md).

A GRPO/RLOO LoRA checkpoint holds adapters only; its `adapter_config.json` names the base model
(`checkpoints/sft` or `checkpoints/base`) relative to the checkpoint itself (`../sft`), and
`load_adapter_model` reads it from there, so a run folder can be moved or read from any folder.

Metrics follow the same idea from the other side: `metrics.jsonl` lines written after the last
complete checkpoint are dropped on `--resume` (rft_cli/run_folder/metrics.py), so a step is never counted twice.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rft_cli.errors import TrainingError

MARKER = "rft_meta.json"
ADAPTER_CONFIG = "adapter_config.json"
STEP_PREFIX = "step-"


def is_complete(folder: str | Path) -> bool:
    """Whether `folder` is a finished checkpoint (its marker exists)."""
    return (Path(folder) / MARKER).is_file()


def _fsync_dir(folder: Path) -> None:
    # A rename is recorded in the parent folder's entry; without this fsync a power cut can undo it
    # even though the files inside were synced.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def temp_folder(folder: str | Path) -> Path:
    """Where `folder` is written before it is complete."""
    folder = Path(folder)
    return folder.with_name(f".tmp-{folder.name}")


# What torch's zip writer says in a RuntimeError when a write fails (a full disk reads "unexpected pos").
_TORCH_WRITE_ERRORS = (
    "inline_container",
    "PytorchStreamWriter",
    "file write failed",
    "cannot be opened",
    "No space left",
    "Permission denied",
    "os error",
)


def is_write_error(exc: BaseException) -> bool:
    """Whether `exc` is a failed write: an OSError, or what torch (RuntimeError) and safetensors
    (SafetensorError "I/O error: No space left on device (os error 28)") raise in its place."""
    if isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError":
        return True
    return isinstance(exc, RuntimeError) and any(
        marker in str(exc) for marker in _TORCH_WRITE_ERRORS
    )


def describe_write_error(exc: BaseException, where: str | Path) -> str:
    """The error in a few words, then the free space left where it happened: "(No space ...) with 3 MiB free"."""
    detail = (
        exc.strerror
        if isinstance(exc, OSError) and exc.strerror
        else str(exc).strip().splitlines()[0][:200]
    )
    path = Path(where)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = f" with {shutil.disk_usage(path).free / 2**20:.0f} MiB free"
    except OSError:
        free = ""
    return f"({detail}){free}"


def io_error(folder: Path, exc: BaseException) -> TrainingError:
    return TrainingError(
        f"{folder}: cannot write the checkpoint {describe_write_error(exc, folder.parent)}; the previous checkpoint "
        "is intact, free disk space or fix permissions, then rerun with --resume"
    )


def commit_checkpoint(tmp: str | Path, folder: str | Path, meta: dict[str, Any]) -> Path:
    """Write the marker into the filled temporary folder `tmp`, then rename it to `folder`.

    An existing `folder` is replaced only after the new one is complete.
    """
    tmp, folder = Path(tmp), Path(folder)
    try:
        # The marker is synced before the rename: a folder that carries its final name and a marker
        # must never hold a marker the disk has not kept.
        with (tmp / MARKER).open("w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=2, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        if folder.exists():
            # rename() cannot replace a non-empty folder, so the old one steps aside first and is
            # deleted only once the new one holds the name.
            old = folder.with_name(f".old-{folder.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(folder, old)
            os.rename(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
        _fsync_dir(folder.parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise io_error(folder, exc) from None
    return folder


def write_checkpoint(
    folder: str | Path, write: Callable[[Path], None], meta: dict[str, Any]
) -> Path:
    """Call `write(tmp)` to fill a temporary folder, add the marker last, then rename to `folder`.

    Raises TrainingError on an I/O error (full disk, no permission), leaving earlier checkpoints
    untouched and no temporary folder behind.
    """
    folder = Path(folder)
    tmp = temp_folder(folder)
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
    except Exception as exc:  # noqa: BLE001  torch/safetensors report a full disk as non-OSErrors; others re-raise
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_write_error(exc):
            raise
        raise io_error(folder, exc) from None
    return commit_checkpoint(tmp, folder, meta)


def step_checkpoints(
    checkpoints_dir: str | Path, prefix: str = STEP_PREFIX
) -> list[tuple[int, Path]]:
    """Complete `<prefix><N>` folders (`step-<N>`, or the warm-up's `sft-step-<N>`), sorted by N."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    pattern = re.compile(re.escape(prefix) + r"(\d+)")
    found = []
    for child in root.iterdir():
        match = pattern.fullmatch(child.name)
        if match and child.is_dir() and is_complete(child):
            found.append((int(match.group(1)), child))
    return sorted(found)


def find_latest_complete(checkpoints_dir: str | Path) -> Path | None:
    """The complete `step-<N>` folder with the highest N, or None."""
    found = step_checkpoints(checkpoints_dir)
    return found[-1][1] if found else None


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The marker's contents (step, stage, valid_reward_mean, versions, ...)."""
    return json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))


def anchor_adapter_base(folder: str | Path, home: str | Path, checkpoints_dir: str | Path) -> None:
    """Name the base model of the LoRA adapters in `folder` relative to `home`, where they will live.

    peft records the base as it was loaded (`runs/x/checkpoints/sft`, relative to the folder training
    ran in); a base inside the run's `checkpoints_dir` becomes `../sft`, so the run folder can move.
    A base elsewhere (a hub id, the user's model) is left as it is.
    """
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        return
    base = Path(base).resolve()
    if not base.is_relative_to(Path(checkpoints_dir).resolve()):
        return
    config["base_model_name_or_path"] = os.path.relpath(base, Path(home).resolve())
    path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def adapter_base(folder: str | Path) -> str:
    """Where the base model of the LoRA adapters in `folder` is (what `from_pretrained` loads).

    A relative path is read against the folder first (`../sft`, as rft writes it); then, for a
    checkpoint written before rft did so, against the working folder and as the checkpoint's
    sibling of the same name (`runs/x/checkpoints/sft` seen from elsewhere or after a move).
    """
    folder = Path(folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = str(config.get("base_model_name_or_path") or "")
    relative = Path(base)
    if not base or relative.is_absolute():
        return base
    for candidate in (folder / relative, relative):
        if candidate.is_dir():
            return str(candidate)
    sibling = folder.parent / relative.name
    return str(sibling) if is_complete(sibling) else base


def load_adapter_model(folder: str | Path, dtype: Any = None) -> Any:
    """The LoRA checkpoint in `folder` merged into its base model: a plain Hugging Face model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    options = {} if dtype is None else {"dtype": dtype}
    base = AutoModelForCausalLM.from_pretrained(adapter_base(folder), **options)
    return PeftModel.from_pretrained(base, str(folder)).merge_and_unload()


def prune_checkpoints(
    checkpoints_dir: str | Path, keep: int, prefix: str = STEP_PREFIX
) -> list[Path]:
    """Keep the `keep` best `<prefix><N>` checkpoints by valid_reward_mean, and always the latest.

    Checkpoints without a validation score rank below scored ones (newer first among equals).
    Returns the folders removed. Temporary folders left by a crash are removed too.
    """
    root = Path(checkpoints_dir)
    found = step_checkpoints(root, prefix)
    if not found:
        return []
    latest = found[-1][1]

    def score(item: tuple[int, Path]) -> tuple[float, int]:
        value = read_meta(item[1]).get("valid_reward_mean")
        return (float(value) if isinstance(value, (int, float)) else float("-inf"), item[0])

    best = {path for _, path in sorted(found, key=score, reverse=True)[:keep]}
    removed = []
    for _, path in found:
        if path != latest and path not in best:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    # Called by the one process that writes checkpoints, right after it committed one, so no writer
    # owns a .tmp- folder now: any left is the remains of a crash.
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return removed


def validation_score(folder: str | Path) -> float | None:
    """The checkpoint's recorded valid_reward_mean (None when it was not evaluated)."""
    value = read_meta(folder).get("valid_reward_mean")
    return float(value) if isinstance(value, (int, float)) else None


def best_checkpoint(checkpoints_dir: str | Path, start: str | Path | None = None) -> Path | None:
    """The scored candidate with the highest valid_reward_mean: the step checkpoints and `start`.

    `start` is the model RL began from (the warm-up or the saved base model); it competes like a
    step checkpoint, so a run whose validation only fell hands back its starting model. Ties go to
    the later step, and a step to the start. With nothing scored, the latest step (else `start`).
    """
    found = step_checkpoints(checkpoints_dir)
    candidates = [(validation_score(p), n, p) for n, p in found]
    if start is not None and is_complete(start):
        candidates.append((validation_score(start), -1, Path(start)))
    scored = [c for c in candidates if c[0] is not None]
    if scored:
        return max(scored, key=lambda c: (c[0], c[1]))[2]
    if found:
        return found[-1][1]
    return Path(start) if start is not None and is_complete(start) else None


def beats_saved(checkpoints_dir: str | Path, score: float | None) -> bool:
    """Whether `score` is higher than every saved step checkpoint's (a new best worth saving)."""
    if score is None:
        return False
    saved = [validation_score(p) for _, p in step_checkpoints(checkpoints_dir)]
    return all(s is None or score > s for s in saved)


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states (CUDA too when present)."""
    import numpy as np
    import torch

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo `capture_rng_state`."""
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
