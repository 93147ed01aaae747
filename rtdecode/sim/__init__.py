"""The virtual macaque: seeded simulation of V1/V4/IT MUA for a sequence of images (numpy only).

    from . import VirtualMacaque
    VirtualMacaque(seed=0).simulate_session("train.h5", n_images=2000)

See docs/virtual-macaque.md for the model.
"""

from .macaque import ElectrodeParams, VirtualMacaque
from .stimuli import (
           STIMULUS_KINDS,
           dead_leaves,
           load_image_folder,
           make_stimuli,
           naturalistic,
           photo_crops,
)

__all__ = ["STIMULUS_KINDS", "ElectrodeParams", "VirtualMacaque", "dead_leaves", "load_image_folder",
           "make_stimuli", "naturalistic", "photo_crops"]
