"""The training loop, stacked sweeps, losses, checkpoints and run folders."""
