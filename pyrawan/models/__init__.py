"""Wan2.1 model stacks: presets, loading, pyramidal artifacts, prompt encoding and velocity."""
from pyrawan.models.artifact import LoadedModel, load_model, save_model
from pyrawan.models.denoiser import Velocity, encode_prompts, frame_timesteps
from pyrawan.models.loading import load_components
from pyrawan.models.presets import (
    COMPONENT_NAMES,
    PRESETS,
    TRANSFORMER_ARCHS,
    WanComponents,
    build_preset,
    build_transformer,
)
from pyrawan.models.vae import decode_latents, denormalise_latents, encode_video, normalise_latents

__all__ = [
    "COMPONENT_NAMES", "PRESETS", "TRANSFORMER_ARCHS", "LoadedModel", "Velocity", "WanComponents",
    "build_preset", "build_transformer", "decode_latents", "denormalise_latents", "encode_prompts",
    "encode_video", "frame_timesteps", "load_components", "load_model", "normalise_latents",
    "save_model",
]
