"""The training loop and its parts (optimizer, schedule, state, monitors)."""
