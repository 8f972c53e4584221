"""animdiff: text-to-animation with Stable Diffusion and AnimateDiff motion modules."""

__version__ = "0.1.0"
