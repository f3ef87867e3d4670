"""Recipe section of training (``train:``)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Train(BaseModel):
    """How to finetune: steps, optimiser, engine, checkpoints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(5000, ge=1, description="Optimiser steps.")
