"""``python -m downsample_lab.report DIR [--out DIR]``: see :func:`downsample_lab.report.build.main`."""

from downsample_lab.report.build import main

if __name__ == "__main__":
    main()
