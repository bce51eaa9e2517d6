from ._apps.main import entrypoint

entrypoint()
