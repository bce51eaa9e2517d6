from ._main import entrypoint

entrypoint()
