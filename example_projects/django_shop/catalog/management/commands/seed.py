from django.core.management.base import BaseCommand

from catalog.models import Product


class Command(BaseCommand):
    help = "Create a few products."

    def handle(self, *args, **options):
        for i, name in enumerate(["Teapot", "Kettle", "Mug", "Saucer"], start=1):
            Product.objects.update_or_create(id=i, defaults={"name": name, "price_cents": i * 450})
        self.stdout.write("seeded 4 products")
