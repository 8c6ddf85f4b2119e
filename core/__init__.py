"""Atelier core: ML engines, the job model, storage and settings.

Nothing here imports Flask, Celery, ``web`` or ``worker``; importing a module has no side effects.
"""
