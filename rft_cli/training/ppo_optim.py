"""PPO's optimizer steps, with or without a DeepSpeed engine: the one place that tells them apart.

One optimizer step per minibatch: its micro-batches' gradients accumulate (`backward`), then one
clipped step (`step`). Through accelerate (`Updates`) that is torch's AdamW and
`clip_grad_norm_`; under DeepSpeed (`EngineUpdates`) the engine owns the gradients, the clipping,
the step and the optimizer state a checkpoint keeps. The trainer asks `plain` where it matters
that the model computes as the module it wraps (sharing prompts, reading the old policy off the
sampling pass, splitting a minibatch into any number of pieces).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from rft_cli.errors import ConfigError, TrainingError
from rft_cli.training.launch import configure_deepspeed

DEEPSPEED_DIR, DEEPSPEED_TAG = "deepspeed", "engine"  # engine state inside a step checkpoint


def finite(*values: float) -> bool:
    return all(math.isfinite(float(v)) for v in values)


def check_deepspeed_world(num_processes: int) -> None:
    """accelerate 1.15 sets up DeepSpeed on a CPU without its process group: every process then
    believes it is the only one (and the main one), so each would write the run folder."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != num_processes:
        raise ConfigError(
            f"DeepSpeed: accelerate sees {num_processes} process(es) of the {world} launched (it does so on a "
            "machine without GPUs); run DeepSpeed on GPUs, or with one process on a CPU"
        )


def fused_adamw(parameters: list[Any], deepspeed: bool) -> bool | None:
    """Whether AdamW takes torch's fused kernel: one pass over all parameters instead of ~10 small
    ops per tensor, as TRL's and `rft train`'s SFT do (`adamw_torch_fused`). On CPU torch would
    otherwise loop tensor by tensor: 2.2 ms a step for llama-1m against 0.9 fused (2 threads). The
    same update to float rounding (7e-9 after 50 steps). Not under DeepSpeed, which wraps the
    optimizer in its own; None leaves torch's choice. A checkpoint keeps the choice it was saved with."""
    usable = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)
    return True if usable and parameters and not deepspeed else None


def prepare_updates(accelerator: Any, core: Any, rl: Any) -> tuple[Any, Updates]:
    """accelerate's wrap of `core` (the policy and its value head) and its optimizer steps."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    parameters = [p for p in core.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters,
        lr=rl.learning_rate,
        weight_decay=rl.weight_decay,
        fused=fused_adamw(parameters, deepspeed=plugin is not None),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    if plugin is not None:
        check_deepspeed_world(accelerator.num_processes)
        configure_deepspeed(plugin.deepspeed_config, rl, accelerator.num_processes)
    model, optimizer = accelerator.prepare(core, optimizer)
    wrapped = getattr(accelerator, "deepspeed_engine_wrapped", None)
    if wrapped is None:
        return model, Updates(accelerator, optimizer, scheduler, parameters, rl.max_grad_norm)
    return model, EngineUpdates(accelerator, optimizer, scheduler, wrapped.engine)


class Updates:
    """Optimizer steps through accelerate: accumulate, clip to `rl.max_grad_norm`, step."""

    plain = True  # the model computes as the module it wraps; micro-batches need not line up

    def __init__(
        self,
        accelerator: Any,
        optimizer: Any,
        scheduler: Any,
        parameters: list[Any],
        max_grad_norm: float,
    ):
        self.accelerator, self.optimizer, self.scheduler = accelerator, optimizer, scheduler
        self.parameters, self.max_grad_norm = parameters, max_grad_norm

    def any_process(self, flag: bool) -> bool:
        """Whether `flag` holds on any process (every process must take the same branch)."""
        if self.accelerator.num_processes == 1:
            return flag
        total = self.accelerator.reduce(
            torch.tensor([float(flag)], device=self.accelerator.device), "sum"
        )
        return bool(total.item() > 0)

    def loss_scaled(self) -> bool:
        """Whether float16 loss scaling may skip an update (counted as `fp16_overflow_steps`)."""
        return self.accelerator.scaler is not None

    def backward(self, loss: Any, last: bool) -> None:
        """Accumulate a micro-batch's gradient."""
        self.accelerator.backward(loss)

    def step(self) -> tuple[float, str]:
        """Clip to `rl.max_grad_norm` and step once; returns (gradient norm, outcome).

        The outcome is "ok"; "overflow" when float16 loss scaling found a non-finite norm and skipped
        the update (routine: the scale is lowered); or "fault" when the norm was not finite on some
        process otherwise (then no process steps).
        """
        grad_norm = self.accelerator.clip_grad_norm_(self.parameters, self.max_grad_norm)
        outcome = "ok"
        if self.any_process(not finite(grad_norm.item())):
            if self.accelerator.scaler is None:
                self.optimizer.zero_grad(set_to_none=True)
                return math.nan, "fault"
            outcome = "overflow"  # the scaler's step below skips this update and lowers the scale
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm.item(), outcome

    def discard(self, loss: Any) -> None:
        """Drop the minibatch's accumulated gradients after a non-finite loss on some process."""
        self.optimizer.zero_grad(set_to_none=True)

    # -- the optimizer state in a checkpoint ----------------------------------------------------

    def stage_state(self, folder: Path) -> None:
        """Every process's part of the state, before the main process writes `folder`."""

    def write_state(self, tmp: Path, folder: Path) -> None:
        """The optimizer state into the checkpoint `folder` being written in `tmp`."""
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")

    def load_state(self, folder: Path) -> None:
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))


class EngineUpdates(Updates):
    """Optimizer steps through a DeepSpeed engine, which steps, clips and saves itself."""

    plain = False

    def __init__(self, accelerator: Any, optimizer: Any, scheduler: Any, engine: Any):
        super().__init__(accelerator, optimizer, scheduler, [], 0.0)
        self.engine = engine

    def loss_scaled(self) -> bool:
        return self.accelerator.scaler is not None or self.engine.fp16_enabled()

    def backward(self, loss: Any, last: bool) -> None:
        """The engine syncs only on the last micro-batch. accelerate's `backward` would step the
        engine after every micro-batch and divide the loss by the engine's accumulation steps,
        but the micro-batch losses already sum to the minibatch's."""
        self.engine.set_gradient_accumulation_boundary(is_boundary=last)
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> tuple[float, str]:
        # The engine computes the global norm, skips its update when the norm is not finite
        # (ZeRO-1/2; float16 also lowers its loss scale), clips with `gradient_clipping`
        # (= rl.max_grad_norm) and zeroes the gradients.
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        if not self.engine.was_step_applied() or (norm is not None and not finite(norm)):
            return math.nan, "overflow" if self.engine.fp16_enabled() else "fault"
        return (float(norm) if norm is not None else 0.0), "ok"

    def discard(self, loss: Any) -> None:
        """The engine keeps the gradients in its own (partitioned) buffers, and its one clean reset
        is the skip of a step whose gradient norm is not finite, so the non-finite loss is sent through."""
        self.backward(loss, last=True)
        self.engine.step()

    def _engine_dir(self, folder: Path) -> Path:
        return folder.parent / f".{DEEPSPEED_DIR}-{folder.name}"

    def stage_state(self, folder: Path) -> None:
        # every process writes its own shard of the optimizer state (ZeRO partitions it); the
        # main process then moves the folder into the checkpoint before the marker is written
        self.engine.save_checkpoint(str(self._engine_dir(folder)), tag=DEEPSPEED_TAG)
        self.accelerator.wait_for_everyone()

    def write_state(self, tmp: Path, folder: Path) -> None:
        os.rename(self._engine_dir(folder), tmp / DEEPSPEED_DIR)

    def load_state(self, folder: Path) -> None:
        """Weights, float32 master copy and every process's optimizer shard."""
        engine_dir = folder / DEEPSPEED_DIR
        if not (engine_dir / DEEPSPEED_TAG).is_dir():
            raise TrainingError(
                f"{folder}: no DeepSpeed engine state ({DEEPSPEED_DIR}/) in this checkpoint, so its "
                "optimizer state cannot be restored under DeepSpeed; resume with the launch mode that wrote it"
            )
        path, _ = self.engine.load_checkpoint(
            str(engine_dir),
            tag=DEEPSPEED_TAG,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
        if path is None:
            raise TrainingError(
                f"{engine_dir}: DeepSpeed could not load the engine state; resume with the same number of processes"
            )
