"""Model code: the downsampling layers, the CNN that uses them, the airbench-class FastNet, the All-CNN family."""

from downsample_lab.models.allcnn import ALLCNN_VARIANTS, AllCNNC
from downsample_lab.models.cnn import DownsampleCNN
from downsample_lab.models.downsample import DOWNSAMPLE_NAMES, PADDING_MODES, create_downsample
from downsample_lab.models.factory import MODEL_NAMES, build_model, describe_model, effective_widths
from downsample_lab.models.fast import FastNet

__all__ = [
    "ALLCNN_VARIANTS",
    "DOWNSAMPLE_NAMES",
    "MODEL_NAMES",
    "PADDING_MODES",
    "AllCNNC",
    "DownsampleCNN",
    "FastNet",
    "build_model",
    "create_downsample",
    "describe_model",
    "effective_widths",
]
