"""The stain normalisation vocabulary and defaults, without Keras: what the command line and the
config need to know of :mod:`hcdtf.models.stain` (which imports Keras) before anything runs."""

METHODS = ("macenko", "reinhard")
TARGET_FORMAT = "hcdtf-stain-target"
TARGET_VERSION = 1

# Macenko's usual parameters (torchstain, TIAToolbox, the original MATLAB code).
DEFAULT_IO = 240.0
DEFAULT_ALPHA = 1.0
DEFAULT_BETA = 0.15
DEFAULT_MIN_TISSUE = 0.01
