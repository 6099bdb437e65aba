"""Pretraining: the loop, its schedules and checkpoints."""
