"""``python -m downsample_lab.bench [overrides]``: see :mod:`downsample_lab.bench.main`."""

from downsample_lab.bench.main import main

if __name__ == "__main__":
    main()
