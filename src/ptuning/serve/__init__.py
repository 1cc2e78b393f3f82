"""``ptuning serve``: one frozen backbone serving every prompt checkpoint of a folder, batched across tasks.

``app.create_app`` builds the FastAPI app; ``registry`` loads checkpoints, ``batcher`` groups concurrent
requests, ``mixed`` runs one backbone pass for rows of many tasks. Imports stay in the submodules so that
``import ptuning.serve`` needs neither FastAPI nor torch.
"""
