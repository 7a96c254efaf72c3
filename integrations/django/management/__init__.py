"""Management commands of the cacheplug Django app."""
