"""How `accelerate launch` started this process, and which of those modes each RL algorithm supports.

`accelerate launch --config_file ...` passes its distributed mode to the processes it starts as
environment variables (`ACCELERATE_USE_FSDP`, `ACCELERATE_USE_DEEPSPEED`,
`ACCELERATE_DEEPSPEED_ZERO_STAGE`), so a mode our PPO cannot run is refused before any model loads.
"""

from __future__ import annotations

import os
from typing import Any

from rft_cli.errors import ConfigError


def env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def check_launch(config: Any) -> None:
    """Refuse FSDP, and DeepSpeed ZeRO stages other than 1 and 2, for `rl.algorithm: ppo`.

    The SFT stage and GRPO/RLOO go through TRL's Trainer, which supports them; only a run whose RL
    stage is our PPO is checked (an SFT-only run may use any mode). `alarms.stop_on` is refused
    for any algorithm when several processes run: only the main process watches the metrics, and
    its stop would leave the others waiting at their next collective.
    """
    if (
        int(os.environ.get("WORLD_SIZE", "1")) > 1
        and config.alarms.enabled
        and config.alarms.stop_on
    ):
        raise ConfigError(
            f"alarms.stop_on ({', '.join(config.alarms.stop_on)}) does not work under a multi-process "
            "launch yet (only the main process watches the metrics); remove it (alarms are still "
            "raised and logged), or run in one process"
        )
    if config.rl.algorithm != "ppo":
        return
    if env_flag("ACCELERATE_USE_FSDP"):
        raise ConfigError(
            "rl.algorithm ppo does not run under FSDP (its rollouts call generate on the unsharded policy, "
            "and accelerate 1.15 runs FSDP on GPUs only, so it is untested here); launch with "
            "recipes/accelerate/multi-gpu.yaml or deepspeed-zero2.yaml, or use rl.algorithm grpo/rloo"
        )
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "").strip()
    if env_flag("ACCELERATE_USE_DEEPSPEED") and stage not in ("", "1", "2"):
        why = (
            "rollouts need whole parameters, which ZeRO-3 partitions"
            if stage == "3"
            else "it has no non-finite gradient check before the step; use DDP instead"
        )
        raise ConfigError(
            f"rl.algorithm ppo does not run under DeepSpeed ZeRO-{stage} ({why}); launch with "
            "recipes/accelerate/deepspeed-zero2.yaml or multi-gpu.yaml, or use rl.algorithm grpo/rloo"
        )


def configure_deepspeed(ds_config: dict[str, Any], rl: Any, world_size: int) -> None:
    """Write PPO's batch shape and clipping into the DeepSpeed config accelerate will hand to the engine.

    One engine step per minibatch: micro-batches of `rl.micro_batch_size` accumulated
    `mini_batch_size / micro` times. The clipping is `rl.max_grad_norm`, whatever the accelerate
    config file says (its `gradient_clipping` used to override ours silently).
    """
    micro = rl.micro_batch_size or rl.mini_batch_size
    steps = rl.mini_batch_size // micro
    ds_config["train_micro_batch_size_per_gpu"] = micro
    ds_config["gradient_accumulation_steps"] = steps
    ds_config["train_batch_size"] = micro * steps * world_size
    ds_config["gradient_clipping"] = rl.max_grad_norm
