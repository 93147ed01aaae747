"""Displays for decoded frames: viewers and prosthetic-vision (phosphene) renderers."""
