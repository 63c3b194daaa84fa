"""A listening page for a speech table: the same test utterances, original and every codec, side by side.

``write_listening_page(results)`` reads a ``simvq bench audio`` CSV and, for each method and K (its
first seed), the reconstructions the run wrote of the first test utterances (``samples/NN_*.wav``, from
the run directory or a campaign's kept copy beside the CSV), and writes ``index.html`` next to the CSV:
one table per utterance, a player for the original and for each codec, with the run's PESQ/STOI and a
link to the spectrogram. Every ``<audio>`` reports whether its file loaded (``data-status`` ``ok`` or
``error``), and the page sums them up in ``<body data-audio="N ok, M failed">``, so a headless browser
can check it: ``check_listening_page`` loads it in Chromium and returns what each player did.

    python -m simvq.experiments.listening docs/speech/results.csv          # writes docs/speech/index.html
    python -m simvq.experiments.listening docs/speech/results.csv --check  # and loads it in headless Chromium
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .comparison import first_seed, group_rows
from .report import k_label, method_key, number
from .results_file import read_results, run_file
from .speech_report import kept_folder

PAGE = "index.html"
# each player's outcome on its element, and the tally on <body> once every player has settled
SCRIPT = """
const players = Array.from(document.querySelectorAll("audio"));
let settled = 0;
function settle(player, status) {
  if (player.dataset.status) return;
  player.dataset.status = status;
  settled += 1;
  if (settled === players.length) {
    const ok = players.filter(p => p.dataset.status === "ok").length;
    document.body.dataset.audio = `${ok} ok, ${players.length - ok} failed`;
  }
}
players.forEach(player => {
  player.addEventListener("loadedmetadata", () => settle(player, "ok"));
  player.addEventListener("error", () => settle(player, "error"));
  if (player.readyState >= 1) settle(player, "ok");
  player.load();
});
if (players.length === 0) document.body.dataset.audio = "0 ok, 0 failed";
"""
STYLE = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:.4em .8em;text-align:left}"


def codec_samples(results: str | Path, *, utterances: int = 4) -> list[dict]:
    """One entry per method and K (first seed, method order, then K): its row, the sample folder and
    the utterance indices with both files there."""
    kept = kept_folder(results)
    groups = group_rows(read_results(results), budget="max_steps")
    codecs = []
    for method, k in sorted(groups, key=lambda key: (key[1], method_key(key[0]))):
        row = first_seed(groups[(method, k)])
        first = run_file(row, "samples/00_original.wav", kept)
        if first is None:
            continue
        folder = first.parent
        found = [i for i in range(utterances) if (folder / f"{i:02d}_original.wav").is_file() and (folder / f"{i:02d}_reconstruction.wav").is_file()]
        codecs.append({"method": method, "k": k, "row": row, "folder": folder, "utterances": found})
    return codecs


def _player(path: Path, page_dir: Path) -> str:
    return f'<audio controls preload="metadata" src="{html.escape(os.path.relpath(path, page_dir))}"></audio>'


def write_listening_page(results: str | Path, out: str | Path | None = None, *, utterances: int = 4) -> Path:
    """``index.html`` (or ``out``) for the CSV's codecs; raises ValueError when no run has samples."""
    out = Path(out) if out else Path(results).parent / PAGE
    codecs = codec_samples(results, utterances=utterances)
    if not codecs:
        raise ValueError(f"{results}: no run of this table has reconstructed samples (samples/NN_original.wav) to listen to")
    page_dir = out.parent
    lines = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8"><title>Speech codecs: listening samples</title>',
             f"<style>{STYLE}</style></head><body>", "<h1>Speech codecs: listening samples</h1>",
             f"<p>The same test utterances (unseen voices) through every codec of <code>{html.escape(str(results))}</code>: the "
             "first seed of each method and codebook size. PESQ and STOI are the run's means over its evaluated test utterances.</p>"]
    indices = sorted({i for codec in codecs for i in codec["utterances"]})
    for index in indices:
        having = [c for c in codecs if index in c["utterances"]]
        original = _player(having[0]["folder"] / f"{index:02d}_original.wav", page_dir)
        lines += [f"<h2>Utterance {index + 1}</h2>", "<table>",
                  "<tr><th>codec</th><th>K</th><th>PESQ</th><th>STOI</th><th>audio</th><th>spectrogram</th></tr>",
                  f"<tr><td>original</td><td></td><td></td><td></td><td>{original}</td><td></td></tr>"]
        for codec in having:
            row, folder = codec["row"], codec["folder"]
            scores = [f"{value:.2f}" if (value := number(row.get(name))) is not None else "" for name in ("pesq", "stoi")]
            spectrogram = folder / f"{index:02d}_spectrogram.png"
            link = f'<a href="{html.escape(os.path.relpath(spectrogram, page_dir))}">png</a>' if spectrogram.is_file() else ""
            lines.append(f"<tr><td>{html.escape(codec['method'])} (seed {html.escape(str(row.get('seed')))})</td><td>{k_label(codec['k'])}</td>"
                         f"<td>{scores[0]}</td><td>{scores[1]}</td><td>{_player(folder / f'{index:02d}_reconstruction.wav', page_dir)}</td>"
                         f"<td>{link}</td></tr>")
        lines.append("</table>")
    lines += [f"<script>{SCRIPT}</script>", "</body></html>", ""]
    from ..utils import atomic_write_text

    atomic_write_text(out, "\n".join(lines))
    return out


def chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None)


def check_listening_page(page: str | Path, *, timeout: float = 60.0) -> dict:
    """Load ``page`` in headless Chromium; ``{"summary": "N ok, M failed", "players": {src: status}}``
    (status ``ok``, ``error``, or ``unsettled`` when the player never reported). RuntimeError without Chromium."""
    browser = chromium()
    if browser is None:
        raise RuntimeError("no Chromium found (chromium, chromium-browser or google-chrome on PATH)")
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files", "--mute-audio",
               "--virtual-time-budget=20000", "--dump-dom", Path(page).resolve().as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=timeout).stdout
    players = {}
    for tag in re.findall(r"<audio\b[^>]*>", dom):
        src = html.unescape(re.search(r'src="([^"]*)"', tag).group(1))
        status = re.search(r'data-status="([^"]*)"', tag)
        players[src] = status.group(1) if status else "unsettled"
    summary = re.search(r'<body[^>]*data-audio="([^"]*)"', dom)
    return {"summary": summary.group(1) if summary else None, "players": players}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="the listening page of a speech table (index.html beside the CSV)")
    parser.add_argument("results", help="a `simvq bench audio` results CSV")
    parser.add_argument("--out", default=None, help="the page (default: index.html beside the CSV)")
    parser.add_argument("--utterances", type=int, default=4)
    parser.add_argument("--check", action="store_true", help="load the page in headless Chromium and check every player")
    args = parser.parse_args(argv)
    page = write_listening_page(args.results, args.out, utterances=args.utterances)
    print(f"listening page written to {page}")
    if args.check:
        outcome = check_listening_page(page)
        bad = {src: status for src, status in outcome["players"].items() if status != "ok"}
        print(f"headless Chromium: {outcome['summary']}; {len(outcome['players'])} players" + (f"; not loaded: {bad}" if bad else ""))
        return 1 if bad or not outcome["players"] else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
