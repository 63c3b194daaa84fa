"""Training recipes on Lightning (the layer above ``simvq.runs``): ``core`` (what every recipe shares),
``recipe`` (the tokenizer recipe and its ``Modality`` plug-in interface), the plug-ins ``image``
(``from simvq.train.image import train_tokenizer``) and ``audio``, the ``prior`` recipe, and the
commands (``commands``, ``prior_commands``). Which plug-in a config trains with is its recipe kind's
entry in ``simvq.runs.registry``. ``config`` and ``run_files`` are compatibility names for
``simvq.runs``."""
