"""``manage.py cacheplug ...``."""
