"""pyrawan: pyramidal video diffusion for Wan2.1."""
__version__ = "0.1.0"
