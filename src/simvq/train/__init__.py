"""Training recipes. ``config`` (dataclass schemas, filled by OmegaConf) and ``run_files`` import no
Lightning; the Lightning parts are imported only when training: ``core`` (what every recipe shares),
``recipe`` (the tokenizer recipe and its ``Modality`` plug-in interface), the plug-ins ``image``
(``from simvq.train.image import train_tokenizer``) and ``audio``, and ``prior``."""
