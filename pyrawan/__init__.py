"""pyrawan: pyramidal video diffusion for Wan2.1."""
from pyrawan.threads import passive_wait as _passive_wait

__version__ = "0.1.0"

_passive_wait()     # OpenMP threads sleep rather than spin while waiting: before torch loads (pyrawan.threads)
