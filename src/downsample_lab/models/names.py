"""The names a ``model`` config may use, and what each strategy builds: torch-free, so that the config schema,
``--help`` and a typo's error do not import torch. The layers themselves are in :mod:`.downsample` (whose
registry must list exactly :data:`STRATEGIES`), the networks in :mod:`.cnn`, :mod:`.fast` and :mod:`.allcnn`.
"""

STRATEGIES: dict[str, str] = {
    "maxpool": "MaxPool2d(2, stride 2): no parameters",
    "conv": "Conv2d(C, C, 2, stride 2) → BatchNorm → ReLU: an added layer, 4·C·C + 2·C parameters",
    "conv3": "Conv2d(C, C, 3, stride 2, padding 1) → BatchNorm → ReLU: an added layer, 9·C·C + 2·C",
    "avgpool": "AvgPool2d(2, stride 2): no parameters",
    "blurpool": "anti-aliased max-pool (Zhang 2019): MaxPool2d(2, stride 1), 3x3 blur with stride 2 "
    "(zero padding only)",
    "stride": "no layer: the conv before the site runs with stride 2, as in ResNet: parameters as maxpool",
    "conv_avg": "Conv2d(C, C, 2, stride 2), linear (no BatchNorm, no activation), starts as AvgPool2d(2): 4·C·C",
    "aps": "adaptive polyphase sampling (Chaman & Dokmanić 2021): the 2x2 phase of largest norm; no parameters",
    "maxavg": "(MaxPool2d(2) + AvgPool2d(2)) / 2, stride 2 (Mishkin et al. 2017): no parameters",
}
"""Every valid ``model.downsample``, with what it builds at a downsampling site (for ``--help``)."""

DOWNSAMPLE_NAMES: tuple[str, ...] = tuple(STRATEGIES)
"""Valid values of ``model.downsample``."""

ZERO_PADDING_ONLY = ("blurpool",)
"""Strategies whose layer pads with zeros whatever ``model.padding_mode`` says (kornia's MaxBlurPool2D)."""

PADDING_MODES = ("zeros", "circular", "reflect")
"""Valid values of ``model.padding_mode``: what every conv brings in at the border (``nn.Conv2d``'s modes)."""

ALLCNN_VARIANTS = ("model_c", "strided_cnn_c", "convpool_cnn_c", "all_cnn_c")
"""The All-CNN family of Springenberg et al. 2014 (:mod:`.allcnn`)."""

MODEL_NAMES = ("cnn", "fast", *ALLCNN_VARIANTS)
"""Valid values of ``model.name``."""

MATCH_REFERENCE = "conv"
"""With ``model.match_params=true`` every arm is sized to the parameter count of this arm at ``model.widths``."""
