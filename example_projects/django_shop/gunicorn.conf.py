"""gunicorn hooks: each worker saves its cache state and stops its threads on exit."""

bind = "127.0.0.1:8000"
workers = 2


def worker_exit(server, worker):
    from cacheplug.integrations.django import close_all

    close_all()
