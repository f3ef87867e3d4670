"""The built-in toy world: seeded captioned videos (``world``) and ToyBench, a judge with no learned weights.

``world``: ``sample_scene``, ``render``, ``caption``, ``parse_caption``, ``make_dataset``.
``bench``: ``score_video``, ``score_set`` (measurements in ``features``, corruptions in ``corrupt``,
dataset layouts in ``layouts``). See ``docs/toy-world.md``.
"""
