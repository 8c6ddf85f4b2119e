"""The Celery side: the app factory (:mod:`.celery_app`), the one task (:mod:`.tasks`), worker
lifecycle hooks (:mod:`.lifecycle`) and the thin ``enqueue`` function the web uses (:mod:`.enqueue`)."""
