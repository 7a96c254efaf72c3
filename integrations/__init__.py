"""Framework adapters for cacheplug, installed as ``cacheplug.integrations``.

This package imports no framework: each adapter module imports its own framework,
so ``import cacheplug.integrations`` is always cheap and always succeeds.
"""
