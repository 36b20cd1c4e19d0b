"""Tiny data and settings per distillation method for ``tests/test_method_shape.py``:
each module here defines ``case() -> (method_module, data, settings)``."""
