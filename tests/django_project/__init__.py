"""A small Django project the Django adapter tests run against (pytest-django)."""
