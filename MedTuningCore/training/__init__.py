"""Fine-tuning: the trainer, losses, checkpoints."""
