"""The speech recipe's training step with and without its discriminators (issue #27, item 2).

Trains configs/speech.yaml as it is (batch 16 x 1 s clips at 16 kHz, the Vocos-style decoder, simvq
K=4,096 unless overridden) on ``--utterances`` training utterances of the default espeak-ng corpus
(synthesised into a temporary folder, as ``build_speech_corpus`` writes them), with
``loss.discriminator`` false and true in alternation, ``--rounds`` times each, in this one process.
A callback times every step (batch start to batch end: generator forward/backward, the discriminator's
step when on, logging); the first ``--skip`` steps of each run (allocation, first-touch) are left out
and the median of the rest reported. The CSV logs give the discriminator's hinge loss at its first
and last steps, to show it moves.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/speech_step.py --steps 30
    ... --override quantizer.codebook_size=65536
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

RECIPE = ROOT / "configs" / "speech.yaml"


def training_utterances(root: Path, count: int) -> Path:
    from simvq.data.speech.corpus import SpeechCorpusSpec, _build_one, corpus_plan, rate_dir
    from simvq.metrics.audio import evenly_spaced

    rows = [row for row in corpus_plan(SpeechCorpusSpec()) if row["split"] == "train"]
    for index in evenly_spaced(len(rows), count):
        _build_one(root, rows[index], (16000,))
    return rate_dir(root, 16000) / "train"


def timed_run(folder: Path, out_dir: Path, *, discriminator: bool, steps: int, overrides: list[str]) -> tuple[list[float], list[dict]]:
    import lightning.pytorch as pl

    from simvq.train.audio import AudioModality
    from simvq.train.config import load_recipe
    from simvq.train.recipe import TokenizerModule, fit_tokenizer

    config = load_recipe(RECIPE, [
        "data.name=wav_folder", f"data.root={folder}", f"out_dir={out_dir}", f"trainer.max_steps={steps}",
        "trainer.log_every=1", "trainer.sample_every=0", "trainer.checkpoint_every=100000", "trainer.progress_bar=false",
        f"loss.discriminator={str(discriminator).lower()}", *overrides,
    ])
    seconds: list[float] = []

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seconds.append(time.perf_counter() - self.start)

    class TimedModality(AudioModality):
        def callbacks(self, config):
            return [*super().callbacks(config), StepTimer()]

    fit_tokenizer(config, lambda: TokenizerModule(config, TimedModality(config)), evaluate=False, progress=False)
    with open(out_dir / "logs" / "csv" / "version_0" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--utterances", type=int, default=32)
    parser.add_argument("--override", action="append", default=[], help="a recipe override, e.g. quantizer.codebook_size=65536")
    args = parser.parse_args()
    torch.set_num_threads(1)
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as scratch:
        folder = training_utterances(Path(scratch) / "corpus", args.utterances)
        for round_index in range(args.rounds):
            for discriminator in (False, True):
                out_dir = Path(scratch) / f"run-{round_index}-{'gan' if discriminator else 'plain'}"
                seconds, rows = timed_run(folder, out_dir, discriminator=discriminator, steps=args.steps, overrides=args.override)
                times[discriminator] += seconds[args.skip:]
                if discriminator:
                    hinge = [float(row["train/discriminator"]) for row in rows if row.get("train/discriminator")]
                    generator = [float(row["train/generator"]) for row in rows if row.get("train/generator")]
                    print(f"round {round_index}: discriminator hinge loss {hinge[0]:.3f} at step 0 -> {hinge[-1]:.3f} at step "
                          f"{len(hinge) - 1} (min {min(hinge):.3f}, max {max(hinge):.3f}); generator hinge {generator[0]:.3f} -> {generator[-1]:.3f}")
                reconstruction = [float(row["train/reconstruction"]) for row in rows if row.get("train/reconstruction")]
                print(f"round {round_index}, discriminator={discriminator}: median {statistics.median(seconds[args.skip:]):.3f} s/step, "
                      f"reconstruction loss {reconstruction[0]:.2f} -> {reconstruction[-1]:.2f}")
    plain, gan = statistics.median(times[False]), statistics.median(times[True])
    print(f"\nmedian over {len(times[False])} steps each: without discriminators {plain:.3f} s/step, with {gan:.3f} s/step "
          f"({gan / plain:.2f}x); means {statistics.mean(times[False]):.3f} / {statistics.mean(times[True]):.3f}")


if __name__ == "__main__":
    main()
