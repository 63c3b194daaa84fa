"""Trained tokenizers out of simvq's run directories, for use elsewhere:

- ``simvq export-hf RUN DIR``: a run (tokenizer or prior) in Hugging Face Hub's layout
  (``simvq.runs.pretrained``; ``Tokenizer.from_pretrained`` reads it back), optionally pushed;
- ``simvq export-onnx RUN [--out DIR]``: ``encode.onnx`` and ``decode.onnx`` (``simvq.export.onnx``),
  checked against PyTorch with onnxruntime on the run's test split.

Imports nothing heavy until a command runs (torch's ONNX exporter, huggingface_hub).
"""
