"""Checkpoints: torch.distributed.checkpoint folders with the resolved config beside the weights."""
