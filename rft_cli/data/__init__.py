"""Datasets: the JSONL contract (records), validation, and loading for training."""
