"""``cacheplug.signals``: the signals cacheplug emits, declared in :mod:`cacheplug.events`."""

from cacheplug.events import *  # noqa: F403 - this module is the public alias
from cacheplug.events import __all__  # noqa: F401
