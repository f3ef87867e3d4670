"""The built-in toy world: seeded captioned videos (``world``) and ToyBench, a judge with no learned weights.

``world``: ``sample_scene``, ``render``, ``caption``, ``parse_caption`` (``partial=True`` for short
captions), ``make_dataset``. ``bench``: ``score_video``, ``score_set``, ``intervals`` (measurements in
``features``, corruptions in ``corrupt``, dataset layouts in ``layouts``). The shipped toy models:
``train_vae`` (the VAE), ``ship`` (writes weights into the package), ``probe`` (does a teacher read
its caption), ``figures`` (PNG figures of results). See ``docs/toy-world.md``.
"""
