"""downsample-lab's Hydra sweeper (``hydra/sweeper=checked``): :mod:`.checked_sweeper`."""
