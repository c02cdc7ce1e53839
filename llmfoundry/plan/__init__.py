"""`foundry plan`: parameters, FLOPs, memory per GPU, time and cost of a training config, before running it."""
