"""Training recipes. ``config`` is plain dataclasses (no Lightning); the Lightning parts live in
``image`` and are imported only when training: ``from simvq.train.image import train_tokenizer``."""
