"""Model code: the downsampling layers and the CNN that uses them."""

from downsample_lab.models.cnn import DownsampleCNN, build_model
from downsample_lab.models.downsample import DOWNSAMPLE_NAMES, create_downsample

__all__ = ["DOWNSAMPLE_NAMES", "DownsampleCNN", "build_model", "create_downsample"]
