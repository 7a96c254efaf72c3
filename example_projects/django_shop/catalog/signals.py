"""A product that changes drops every cached copy of it (data, pages, fragments)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .data import invalidate_product
from .models import Product


@receiver(post_save, sender=Product)
@receiver(post_delete, sender=Product)
def product_changed(sender, instance: Product, **kwargs) -> None:
    invalidate_product(instance.pk)
