"""rft: reinforcement fine-tuning (SFT warm-up, then PPO) for open models on your own hardware."""

__version__ = "0.1.0"

__all__ = ["__version__"]
