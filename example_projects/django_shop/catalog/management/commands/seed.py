from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from catalog.models import Product

#: Demo accounts (log in at /login/); never use such passwords outside an example.
USERS = ("alice", "bob")
PASSWORD = "shop-demo-password"


class Command(BaseCommand):
    help = "Create a few products and the demo users alice and bob."

    def handle(self, *args, **options):
        for i, name in enumerate(["Teapot", "Kettle", "Mug", "Saucer"], start=1):
            Product.objects.update_or_create(id=i, defaults={"name": name, "price_cents": i * 450})
        User = get_user_model()
        for username in USERS:
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(PASSWORD)
            user.save()
        self.stdout.write(f"seeded 4 products and users {', '.join(USERS)}")
