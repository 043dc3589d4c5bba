"""Training: SFT warm-up (TRL), our PPO (ReFT), and GRPO/RLOO through TRL; `run.train` runs a whole
config (`rft train`, `rft_cli.train`), `stage_loop` is the protocol every stage follows."""
