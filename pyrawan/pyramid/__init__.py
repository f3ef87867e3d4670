"""Pure tensor math of pyramidal flow matching (the contract in docs/pyramid-math.md).

No file I/O and no model classes: every command builds on these functions.
"""
