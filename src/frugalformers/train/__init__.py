"""Training: run configs, the trainer, checkpoints, schedules, fine-tuning tasks."""
