"""Training: SFT warm-up (TRL), our PPO (ReFT), and GRPO/RLOO through TRL; `run_training` runs a whole config."""
