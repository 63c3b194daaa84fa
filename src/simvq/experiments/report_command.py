"""``simvq report``: the image benchmark's CSV and/or the generation and speech benchmarks' CSVs -> docs/results.md."""

from __future__ import annotations


def _report(args) -> int:
    from .generation_report import write_generation_report
    from .report import write_report
    from .speech_report import write_speech_report

    _check_paths(args)
    if args.results is not None or (args.generation is None and args.speech is None):
        path = write_report(args.results or "results.csv", args.out, figures_dir=args.figures, curves=args.curves,
                            references_file=args.references, compute_references=not args.cached_references, spend=args.spend,
                            kept=args.kept)
        print(f"report written to {path}")
    if args.generation is not None:
        path = write_generation_report(args.generation, args.out, figures_dir=args.figures)
        print(f"generation report written to {path}")
    if args.speech is not None:
        path = write_speech_report(args.speech, args.out, figures_dir=args.figures)
        print(f"speech report written to {path}")
        from .listening import codec_samples, write_listening_page

        if codec_samples(args.speech):  # the listening page beside the CSV, when its runs kept samples
            print(f"listening page written to {write_listening_page(args.speech)}")
    return 0


def _check_paths(args) -> None:
    """The CSVs named on the command line must not be folders (a missing one is each section's own
    "no results" message), ``--out`` a page (not a folder), ``--figures`` a folder and ``--kept`` an
    existing folder, refused naming the option before anything is written."""
    from pathlib import Path

    from ..utils import UsageError, check_out_dir_option

    for option in ("results", "generation", "speech", "curves", "references", "spend"):
        value = getattr(args, option)
        if value is not None and Path(value).is_dir():
            raise UsageError(f"--{option}", f"{value} is a directory; give the file")
    if Path(args.out).is_dir():
        raise UsageError("--out", f"{args.out} is a directory; give the Markdown page to write, e.g. {Path(args.out) / 'results.md'}")
    check_out_dir_option(args.figures, "--figures")
    if args.kept is not None and not Path(args.kept).is_dir():
        raise UsageError("--kept", f"{args.kept} is not a directory; give the campaign's folder of kept run files")


def add_parser(subparsers) -> None:
    report = subparsers.add_parser("report", help="results CSVs -> docs/results.md tables, findings and PNG plots")
    report.add_argument("--results", default=None,
                        help="the image benchmark's CSV (default results.csv, unless --generation or --speech is given)")
    report.add_argument("--generation", default=None, help="`simvq bench generation`'s CSV: adds the generation section")
    report.add_argument("--speech", default=None, help="`simvq bench audio`'s CSV: adds the speech codec section")
    report.add_argument("--curves", default=None, help="usage/PSNR-over-steps file (default: <results>_curves.json)")
    report.add_argument("--references", default=None,
                        help="cache of the untrained-Gaussian references (default: data/gaussian_reference.json beside --out); "
                             "missing affordable ones are computed and added")
    report.add_argument("--cached-references", action="store_true",
                        help="use only the references already in the cache (a missing one reads 'not computed')")
    report.add_argument("--spend", default=None,
                        help="the image campaign's spend ledger its header states (default: spend.csv beside --results; the "
                             "generation and speech sections read the spend.csv beside their CSVs)")
    report.add_argument("--kept", default=None,
                        help="the image campaign's folder of each row's kept small files (its usage_history.json), read "
                             "where a row's run directory is gone")
    report.add_argument("--out", default="docs/results.md")
    report.add_argument("--figures", default="docs/figures")
    report.set_defaults(func=_report)
