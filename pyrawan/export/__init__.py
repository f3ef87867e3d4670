"""The end of the lifecycle: a model artifact becomes what other tools load, and goes to the Hub.

``diffusers_folder``: a complete diffusers pipeline folder with a self-contained pipeline class
(``standalone_pipeline.py``, and ``standalone_ppf.py`` for PPF models: torch, numpy and diffusers
only, copied into the folder). ``single_file``: one safetensors file with the original Wan key
names. ``card``: the model card (``README.md``) rendered from the manifests. ``hub``: what
``pyrawan push`` uploads. Nothing here imports ``pyrawan.commands`` or the CLI.
"""
