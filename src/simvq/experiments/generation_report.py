"""The generation section of ``simvq report``: ``simvq bench generation``'s CSV -> tables per K,
SimVQ-versus-each-tokenizer verdicts computed from the numbers, and the sample grids.

Priors of equal size and budget are compared on what the tokens let them generate (domain FID, KID
and precision/recall on the Fashion-MNIST classifier's features, class accuracy of conditional
samples, Inception FID when run), at the default sampling setting and at the setting tuned for each
prior, both measured on a fresh sample set. Beside them stand what bounds them: the real-vs-real
floors (training images in place of samples) and each tokenizer's reconstructions in place of
samples (rFID: what its decoder alone costs). Bits per token are shown beside the unigram entropy of
the same tokens: a tokenizer's own test tokens set its scale, so the gap (what the prior learned)
is the comparable number, not bits per token across tokenizers. Every verdict is Welch's t-test
over seeds (two-sided, alpha 0.05); with one seed on a side the text says it is one run. Rows of an
older CSV without the newer columns render with those cells missing.

With several prior sizes (the ``prior`` column: the prior recipe, e.g. ``prior_small``), every table
and verdict is per size, and a first table sets the sizes side by side: whether SimVQ's gap to VQ
closes or reverses as the prior grows. A row without the column is the default recipe's (``prior``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .comparison import figure_section, group_rows, k_table, run_figures, simvq_verdicts, sizes, verdict, write_section
from .report import MISSING, Stat, k_label, method_order, number, stat_text, summarize, table_rows
from .results_file import LEDGER, kept_folder, precision_text, spend_text
from .stats import ALPHA, contrast, p_text, signed, welch, welch_text

BEGIN = "<!-- generation-report:begin -->"
END = "<!-- generation-report:end -->"
HEADING = "## Generation benchmark (`simvq bench generation`, `simvq report --generation`)"

# (column, title, scale, decimals, lower is better; None: not a score) of the per-K tables
PRIOR_COLUMNS = [
    ("prior_parameters", "prior params (M)", 1e-6, 2, None),
    ("trained_steps", "steps trained", 1.0, 0, None),
    ("best_val_nll_bits_per_token", "best val bits / token", 1.0, 3, True),
    ("val_nll_last20", "Δ val bits / token, last 20%", 1.0, 3, None),  # still falling at the cap: negative
    ("nll_bits_per_token", "bits / token", 1.0, 3, True),
    ("test_entropy_bits", "unigram entropy (bits)", 1.0, 3, None),  # the tokens' property, not a score
    ("nll_bits_per_image", "bits / image", 1.0, 1, True),
    ("test_usage", "test usage %", 100.0, 1, None),
]
DEFAULT_COLUMNS = [
    ("domain_fid", "domain FID", 1.0, 1, True),
    ("domain_kid", "domain KID", 1.0, 2, True),
    ("domain_kid_std", "KID subset std", 1.0, 2, None),
    ("domain_precision", "precision %", 100.0, 1, False),
    ("domain_recall", "recall %", 100.0, 1, False),
    ("class_accuracy", "class accuracy %", 100.0, 1, False),
    ("fid", "FID", 1.0, 1, True),
    ("domain_rfid", "tokenizer domain rFID", 1.0, 1, True),
    ("rfid", "tokenizer rFID", 1.0, 1, True),
]
TUNED_COLUMNS = [
    ("domain_fid_tuned", "domain FID, tuned", 1.0, 1, True),
    ("domain_kid_tuned", "domain KID, tuned", 1.0, 2, True),
    ("domain_kid_std_tuned", "KID subset std", 1.0, 2, None),
    ("domain_precision_tuned", "precision %, tuned", 100.0, 1, False),
    ("domain_recall_tuned", "recall %, tuned", 100.0, 1, False),
    ("class_accuracy_tuned", "class accuracy %, tuned", 100.0, 1, False),
    ("fid_tuned", "FID, tuned", 1.0, 1, True),
    ("tune_domain_fid", "domain FID on the tuning set", 1.0, 1, None),  # optimistic: the setting was picked there
]
COLUMNS = PRIOR_COLUMNS + DEFAULT_COLUMNS + TUNED_COLUMNS
# the generation quality the verdicts are about (bits per token are per-tokenizer, see above)
VERDICT_COLUMNS = [c for c in COLUMNS if c[0] in ("domain_fid", "domain_fid_tuned", "domain_kid", "domain_kid_tuned",
                                                  "class_accuracy", "class_accuracy_tuned", "fid", "fid_tuned", "domain_rfid")]
PRIOR_ORDER = ["prior_small", "prior", "prior_large"]  # the benchmark's prior recipes, smallest first
CHOSEN_PRIOR = "prior"  # the size fixed, before any result, for the seeds and the other methods
AXIS_COLUMN = ("domain_fid_tuned", "domain_fid")  # the size-axis table's score: tuned where measured, else the default
# the real-vs-real floors: (column, title, scale, decimals, the column counting the images they depend on)
FLOORS = [
    ("domain_fid_train", "domain FID", 1.0, 1, "domain_fid_samples"),
    ("domain_kid_train", "domain KID", 1.0, 2, "domain_fid_samples"),
    ("domain_precision_train", "precision %", 100.0, 1, "domain_fid_samples"),
    ("domain_recall_train", "recall %", 100.0, 1, "domain_fid_samples"),
    ("fid_train", "Inception FID", 1.0, 1, "fid_samples"),
]


def gap(runs: dict[str, dict]) -> Stat | None:
    """Unigram entropy minus the prior's bits per token, per seed: what the prior learned."""
    return summarize(
        e - b for r in runs.values()
        if (e := number(r.get("test_entropy_bits"))) is not None and (b := number(r.get("nll_bits_per_token"))) is not None
    )


def tally(runs: dict[str, dict], column: str) -> str:
    """The values a text column takes over the seeds, with their counts: ``plateau (2)``, ``T=0.9; T=1 (2)``."""
    counts = Counter(r[column] for r in runs.values() if r.get(column))
    return "; ".join(f"{value} ({n})" if n > 1 else value for value, n in sorted(counts.items())) or MISSING


def findings(groups: dict) -> list[str]:
    """One sentence per K, rival and metric: SimVQ's tokens help, hurt or make no difference."""
    return simvq_verdicts(groups, VERDICT_COLUMNS) or ["No K has priors on SimVQ tokens and on another tokenizer's tokens yet."]


def any_value(rows: list[dict], *columns: str) -> bool:
    return any(number(r.get(c)) is not None for r in rows for c in columns)


def numbers(rows: list[dict], column: str) -> str:
    values = sorted({int(n) for r in rows if (n := number(r.get(column))) is not None})
    return ", ".join(f"{v:,}" for v in values) or MISSING


def floors_text(rows: list[dict]) -> str:
    """Each floor over the rows, per image count (a floor depends on it: FID's bias falls as 1/N)."""
    parts = []
    for column, title, scale, digits, count_column in FLOORS:
        by_count: dict[int, list[float]] = {}
        for row in rows:
            if (value := number(row.get(column))) is not None and (count := number(row.get(count_column))) is not None:
                by_count.setdefault(int(count), []).append(value)
        for count, values in sorted(by_count.items()):
            parts.append(f"{title} {stat_text(summarize(values), scale, digits)} at {count:,} images")
    return "; ".join(parts) or MISSING


def prior_of(row: dict) -> str:
    return row.get("prior") or "prior"


def prior_rank(prior: str) -> tuple:
    return (PRIOR_ORDER.index(prior) if prior in PRIOR_ORDER else len(PRIOR_ORDER), prior)


def by_prior(rows: list[dict]) -> dict[str, dict]:
    """{prior recipe: group_rows of its rows}, smallest recipe first."""
    priors = sorted({prior_of(r) for r in rows}, key=prior_rank)
    return {prior: group_rows([r for r in rows if prior_of(r) == prior]) for prior in priors}


def parameters_text(groups: dict) -> str:
    """A prior recipe's parameter counts, per K (they grow with K: the embedding is tied to the head)."""
    counts = {k: number(r.get("prior_parameters")) for (m, k), runs in groups.items() for r in runs.values()}
    return ", ".join(f"{c / 1e6:.2f}M at {k_label(k)}" for k, c in sorted(counts.items()) if c) or "parameters not recorded"


def header(priors: dict, results) -> list[str]:
    several = len(priors) > 1
    rows = [row for groups in priors.values() for runs in groups.values() for row in runs.values()]  # superseded budgets left out
    seeds = {f"{m} {k_label(k)}" + (f" ({prior})" if several else ""): len(runs)
             for prior, groups in priors.items() for (m, k), runs in groups.items()}
    budgets = sorted({int(b) for r in rows if (b := number(r.get("steps"))) is not None})
    fid = sorted({int(n) for r in rows if number(r.get("fid")) is not None and (n := number(r.get("fid_samples"))) is not None})
    hours = sum(number(r.get("train_seconds")) or 0.0 for r in rows) / 3600
    eval_hours = sum(number(r.get("eval_seconds")) or 0.0 for r in rows) / 3600
    devices = ", ".join(sorted({r["device"] for r in rows if r.get("device")})) or MISSING
    tuned = [r for r in rows if r.get("sampling_tuned")]
    lines = [
        f"Generated by `simvq report --generation` from `{results}`.",
        "",
        (f"- Priors: {len(rows)}, in {len(priors)} sizes ("
         + "; ".join(f"`{prior}`: {parameters_text(groups)}" for prior, groups in priors.items()) + ")" if several
         else f"- Priors: {len(rows)}, of equal size") + f"; prior step budget(s): {', '.join(f'{b:,}' for b in budgets) or MISSING}; "
        f"devices: {devices}; {hours:.1f} h of prior training" + (f", {eval_hours:.1f} h of evaluation" if eval_hours else "")
        + f"; priors {precision_text(rows)}. Seeds: " + ", ".join(f"{name} {n}" for name, n in sorted(seeds.items())) + ".",
        f"- Domain metrics: features of the project's Fashion-MNIST classifier, {numbers(rows, 'domain_fid_samples')} samples "
        "against the whole test split: FID"
        + (", KID (the unbiased MMD² with the cubic polynomial kernel of Binkowski et al. 2018, mean over 100 random subsets of "
           "1,000 from each side, their std beside it)" if any_value(rows, "domain_kid", "domain_kid_tuned") else "")
        + (", improved precision and recall (Kynkäänniemi et al. 2019, k = 3, against as many test images)"
           if any_value(rows, "domain_precision", "domain_precision_tuned") else "")
        + ". Class accuracy: that classifier on class-conditional samples. "
        + (f"Inception FID: {', '.join(f'{n:,}' for n in fid)} samples against a fixed test subset as large." if fid else INCEPTION_NOT_RUN),
        f"- Floors, real training images in place of samples (as many): {floors_text(rows)}."
        + (" The tokenizer's reconstructions of those training images in place of samples give its rFIDs: what its decoder "
           "alone caps." if any_value(rows, "domain_rfid", "rfid") else ""),
    ]
    if tuned:
        grids = sorted({r["tune_grid"] for r in tuned if r.get("tune_grid")})
        lines.append(
            f"- Sampling: the default is temperature 1, no truncation, no guidance. Each prior's tuned setting was chosen by "
            f"domain FID over {' / '.join(grids) or 'a grid'} on {numbers(tuned, 'tune_samples')} samples at seed "
            f"{numbers(tuned, 'tune_seed')}; both settings were then measured on a fresh set at seed {numbers(tuned, 'sample_seed')}.")
    lines += [
        ("- Bits per token are on each tokenizer's own test tokens; their unigram entropy is what a prior that learned "
         "nothing scores, so compare the gap, not bits per token across tokenizers."),
        *([f"- {spent}"] if (spent := spend_text(Path(results).parent / LEDGER)) else []),
        *([f"- {said}"] if (said := convergence_text(rows)) else []),
        "- Cells: mean ± std over seeds (number of seeds).",
    ]
    return lines


# measured here: Inception-v3 at 299x299 on one thread, 0.30 CPU-s an image (simvq.metrics.image.InceptionFeatures)
INCEPTION_NOT_RUN = ("Inception FID: not run. Inception-v3 at 299×299 costs ~0.30 CPU-seconds an image on one thread here, "
                     "~1,500 CPU-seconds a 5,000-image set, and a prior needs two (default and tuned): ~0.8 CPU-hours a prior, "
                     "about twice the campaign's cap over its 34 priors. The domain FID/KID stand in for it, so the first "
                     "protocol's Inception-FID numbers are not tested again here.")


def convergence_text(rows: list[dict]) -> str | None:
    """Whether the priors converged: how many the held-out rule stopped early, and for those that
    ran their whole budget, where their best validation NLL fell and how much it still moved over the
    last 20% of their steps."""
    stopped = [r for r in rows if r.get("stop_reason") and not str(r["stop_reason"]).startswith("budget")]
    capped = [r for r in rows if str(r.get("stop_reason") or "").startswith("budget")]
    if not capped and not stopped:
        return None
    text = f"Convergence: {len(stopped)} of {len(stopped) + len(capped)} priors stopped early on the held-out rule"
    if capped:
        at_end = sum(number(r.get("best_step")) == number(r.get("trained_steps")) for r in capped)
        moves = [m for r in capped if (m := number(r.get("val_nll_last20"))) is not None]
        text += (f"; {len(capped)} ran their whole step budget, {at_end} of them with their best validation NLL at the last check"
                 + (f", still moving by {min(moves):+.3f} to {max(moves):+.3f} bits per token over their last 20%" if moves else ""))
        if moves and max(moves) < 0:
            text += (". These priors are trained to their budget, not to convergence: every comparison here is at equal "
                     "budget, and a longer budget could move the samples")
    return text + "."


def titled(table: list[str], title: str) -> list[str]:
    """A ``k_table`` under its own bold title (in place of the bare K label); none when it has no data column."""
    if len(table) < 4 or table[2].count("|") <= 2:  # only the method column
        return []
    return [title, *table[1:]]


def has_values(groups: dict, k: int, columns) -> bool:
    return any(number(r.get(c[0])) is not None for (m, size), runs in groups.items() if size == k for r in runs.values() for c in columns)


def size_axis(priors: dict) -> list[str]:
    """Per K, each method's score at each prior size side by side, and SimVQ against VQ at each size."""
    lines = ["### Prior size as an axis", "",
             "Domain FID of each prior's samples at its tuned setting (the default setting where no tuning ran), "
             "fresh sample set; mean ± std (seeds). The last row: SimVQ against VQ at that prior size (Welch's t-test).", ""]
    for k in sorted({k for groups in priors.values() for (_, k) in groups}):
        header_cells = ["method", *(f"`{prior}`" for prior in priors)]
        methods = method_order({m for groups in priors.values() for (m, size) in groups if size == k})
        table = []
        for method in methods:
            cells = []
            for groups in priors.values():
                runs = groups.get((method, k), {})
                column = next((c for c in AXIS_COLUMN if any(number(r.get(c)) is not None for r in runs.values())), AXIS_COLUMN[0])
                cells.append(stat_text(summarize(number(r.get(column)) for r in runs.values()), 1.0, 1))
            table.append([method, *cells])
        if "simvq" in methods and "vq" in methods:
            verdicts = []
            for groups in priors.values():
                _, x, y = paired(groups, k)
                verdicts.append(verdict(x, y, scale=1.0, digits=1, lower=True, rival_name="vq") if x and y else MISSING)
            table.append(["simvq − vq", *verdicts])
        lines += [f"**{k_label(k)}**", "", *table_rows(header_cells, table), ""]
    return lines


def paired(groups: dict, k: int, *, columns: tuple[str, ...] = AXIS_COLUMN, minus: str | None = None,
           seeds: set[str] | None = None) -> tuple[str | None, Stat | None, Stat | None]:
    """SimVQ's and VQ's seeds at K (those in ``seeds`` if given) on the first of ``columns`` both
    sides have (the size axis's score: tuned, else the default): (column, simvq, vq). ``minus``: a
    column subtracted seed by seed."""
    a, b = ({seed: row for seed, row in groups.get((m, k), {}).items() if seeds is None or seed in seeds} for m in ("simvq", "vq"))
    column = next((c for c in columns if all(any(number(r.get(c)) is not None for r in g.values()) for g in (a, b))), None)
    if column is None:
        return None, None, None

    def over_seeds(runs: dict) -> Stat | None:
        values = [number(r.get(column)) for r in runs.values()]
        if minus is not None:
            values = [v - m if v is not None and (m := number(r.get(minus))) is not None else None for v, r in zip(values, runs.values())]
        return summarize(values)

    return column, over_seeds(a), over_seeds(b)


def shared_seeds(priors: dict, k: int) -> set[str]:
    """The seeds SimVQ and VQ both have at K under every prior size: the like-with-like comparison
    across sizes (a size with more seeds would otherwise move by seed noise alone)."""
    sides = [set(groups.get((m, k), {})) for groups in priors.values() for m in ("simvq", "vq")]
    return set.intersection(*sides) if sides else set()


def size_change(found: dict) -> str:
    """Whether SimVQ's gap to VQ differs between the smallest and the largest prior: one test, fixed
    before any result, over every seed of the four cells (a difference of differences, Welch-Satterthwaite)."""
    ordered = list(found.items())  # smallest first
    (small, (_, xs, ys)), (large, (_, xl, yl)) = ordered[0], ordered[-1]
    test = contrast([xl.values, yl.values, xs.values, ys.values], [1.0, -1.0, -1.0, 1.0])
    said = f"The gap at `{large}` minus the gap at `{small}`: {signed((xl.mean - yl.mean) - (xs.mean - ys.mean), 1)}"
    if test is None:
        return said + " (a cell with one seed: no test of the change)."
    seeds = " + ".join(str(n) for n in test.sizes)
    outcome = "the gap changes with the prior's size" if test.significant else "no significant change with the prior's size"
    return (f"{said} → {outcome} (95% CI [{test.low:+.1f}, {test.high:+.1f}], {p_text(test.p)}; a difference of differences, "
            f"Welch-Satterthwaite, {seeds} seeds).")


def still_falling(groups: dict, k: int, prior: str) -> str | None:
    """Whether SimVQ's or VQ's priors were further from converged at the step cap: their held-out NLL's
    change over the last 20% of the budget, by Welch's test. An equal budget is not an equal distance
    from convergence, and the side still falling faster is the one a longer budget would move more."""
    _, x, y = paired(groups, k, columns=("val_nll_last20",))
    if x is None or y is None:
        return None
    said = (f"- **{k_label(k)}, still improving at the cap** (`{prior}`): the held-out NLL's change over the last 20% "
            f"of the budget, simvq {stat_text(x, 1.0, 3)} vs vq {stat_text(y, 1.0, 3)} bits per token")
    test = welch(x.values, y.values)
    if test is None:
        return f"{said} ({signed(x.mean - y.mean, 3)}; one run on a side: no test)."
    ci = f"{signed(x.mean - y.mean, 3)}; {welch_text(test, digits=3)}"
    if test.p >= ALPHA:
        return f"{said} → no significant difference ({ci})."
    faster = "simvq" if x.mean < y.mean else "vq"
    return (f"{said} → {faster}'s priors were still falling faster ({ci}): the equal budget left them further from "
            f"converged, so a longer budget would move them more than the others'.")


def answers(priors: dict) -> list[str]:
    """The campaign's three questions, per K, in words computed from the numbers: SimVQ against VQ at
    the chosen prior size, how that gap moves with the prior's size, and how much of it the decoders
    alone account for. The last is an accounting identity per seed: sample FID = the tokenizer's
    rFID (its decoder's floor) + the prior's excess over it, so the gap splits into the two."""
    lines = []
    for k in sorted({k for groups in priors.values() for (_, k) in groups}):
        found = {prior: paired(groups, k) for prior, groups in priors.items()}
        found = {prior: f for prior, f in found.items() if f[1] and f[2]}
        if not found:
            continue
        chosen = CHOSEN_PRIOR if CHOSEN_PRIOR in found else next(iter(found))
        column, x, y = found[chosen]
        setting = "tuned" if column == AXIS_COLUMN[0] else "default"
        lines.append(f"- **{k_label(k)}, at the chosen size (`{chosen}`)**: domain FID ({setting} sampling), simvq "
                     f"{stat_text(x, 1.0, 1)} vs vq {stat_text(y, 1.0, 1)} → {verdict(x, y, scale=1.0, digits=1, lower=True, rival_name='vq')}.")
        common = shared_seeds({prior: priors[prior] for prior in found}, k)
        if len(found) > 1 and common:
            gaps = [(prior, x.mean - y.mean) for prior in found for _, x, y in [paired(priors[prior], k, seeds=common)]]
            signs = {g > 0 for _, g in gaps}
            moves = [abs(g) for _, g in gaps]
            trend = ("changes sign as the prior grows" if len(signs) > 1 else
                     "narrows as the prior grows" if moves == sorted(moves, reverse=True) else
                     "widens as the prior grows" if moves == sorted(moves) else "does not move one way with size")
            # one seed a size: its means are one run each, and no trend is read from them
            trend = f"in the means the gap {trend}" if len(common) > 1 else "one run a size, so no trend is read from these means"
            shared = f"seed{'s' * (len(common) > 1)} {', '.join(sorted(common))}, the one{'s' * (len(common) > 1)} every size has"
            lines.append(f"- **{k_label(k)}, over prior sizes** ({shared}): SimVQ − VQ, " + ", ".join(f"`{p}` {signed(g, 1)}" for p, g in gaps)
                         + f": {trend} (each size's test, over all its seeds, is in the table above). "
                         + size_change(found))
        if (still := still_falling(priors[chosen], k, chosen)) is not None:
            lines.append(still)
        _, rx, ry = paired(priors[chosen], k, columns=("domain_rfid",))
        _, ex, ey = paired(priors[chosen], k, minus="domain_rfid")
        if rx and ry and ex and ey:
            lines.append(f"- **{k_label(k)}, the decoders' share** (`{chosen}`): the tokenizers' own reconstructions give domain rFID "
                         f"simvq {stat_text(rx, 1.0, 1)} vs vq {stat_text(ry, 1.0, 1)} → "
                         f"{verdict(rx, ry, scale=1.0, digits=1, lower=True, rival_name='vq')}; the samples' excess "
                         f"over their decoder's rFID, simvq {stat_text(ex, 1.0, 1)} vs vq {stat_text(ey, 1.0, 1)} → "
                         f"{verdict(ex, ey, scale=1.0, digits=1, lower=True, rival_name='vq')}. The samples' gap of "
                         f"{signed(x.mean - y.mean, 1)} is the rFID gap ({signed(rx.mean - ry.mean, 1)}) plus the gap in excess "
                         f"({signed(ex.mean - ey.mean, 1)}): an identity of differences of means, not a split of causes (FID does "
                         f"not add over the two stages; each part's own test is above).")
    if not lines:
        return []
    return ["### The questions, answered from the numbers", "",
            "Lower domain FID is better; a negative SimVQ − VQ favours SimVQ's tokens. \"No significant difference\" "
            "is not \"the same\": the 95% CI beside it is the range of gaps these seeds leave open. The samples' excess "
            "over their decoder's rFID can be negative: guidance and a lower temperature trade recall for precision, "
            "which can score better than reconstructions of real images do.", "", *lines, ""]


TRACKED = [("nll_bits_per_image", "the prior's test bits per image"), ("test_entropy_bits", "the tokens' unigram entropy")]


def tracking(rows: list[dict]) -> list[str]:
    """What the samples' domain FID follows over every prior (all sizes, methods, K and seeds), by
    Spearman's rank correlation: the prior's leftover uncertainty (test bits per image), which
    untruncated sampling turns into noise, or the tokens' own entropy; at the default setting and at
    the tuned one, so the page shows how much of that dependence tuning removes. With lfq's
    priors among them, again without: LFQ's codes are bits, and its priors sit apart in both measures."""
    from scipy.stats import spearmanr

    def rho(subset: list[dict], fid: str, column: str) -> str | None:
        pairs = [(f, x) for r in subset if (f := number(r.get(fid))) is not None and (x := number(r.get(column))) is not None]
        if len(pairs) < 4 or any(len(set(side)) < 2 for side in zip(*pairs)):  # a constant side has no rank order
            return None
        value, p = spearmanr(*zip(*pairs))
        return f"ρ = {value:+.2f} ({p_text(p)}, {len(pairs)} priors)"

    subsets = [("", rows)] + ([(" without lfq", [r for r in rows if r.get("method") != "lfq"])] if any(r.get("method") == "lfq" for r in rows) else [])
    lines = []
    for fid, setting in (("domain_fid", "the default setting (T = 1, no truncation, no guidance)"), ("domain_fid_tuned", "each prior's tuned setting")):
        for name, subset in subsets:
            said = [f"with {title} {found}" for column, title in TRACKED if (found := rho(subset, fid, column))]
            if said:
                lines.append(f"- Domain FID at {setting}{name}: " + "; ".join(said) + ".")
    if not lines:
        return []
    return ["### What the samples' FID tracks (Spearman's rank correlation over the priors)", "",
            "Each sample set's domain FID against what its prior left uncertain (test bits per image, which untruncated "
            "sampling turns into noise) and against its tokens' unigram entropy, over the priors of every size, method, K "
            "and seed. Bits per image are measured on each tokenizer's own tokens, so across tokenizers they mix how "
            "well the prior fits with how much the tokens carry.", "", *lines, ""]


def render(rows: list[dict], results, figures_dir: Path, out_dir: Path) -> list[str]:
    priors = by_prior(rows)
    several = len(priors) > 1
    body = [*header(priors, results), ""]
    if several:
        body += size_axis(priors)
    body += answers(priors) + tracking(rows)
    gap_column = ("entropy − bits/token ↑", lambda runs: stat_text(gap(runs), 1.0, 3))
    stop_column = ("stopped by", lambda runs: tally(runs, "stop_reason"))
    notes, figures, tuned_figures, curves = [], [], [], []
    kept = kept_folder(Path(results).parent / "runs", variant=prior_of, budget="steps")  # a campaign's copies of each prior's small files
    for prior, groups in priors.items():
        suffix = f", `{prior}` prior" if several else ""
        if several:
            body += [f"### The `{prior}` prior ({parameters_text(groups)})", ""]
        for k in sizes(groups):
            label = k_label(k) + suffix
            extra = [gap_column] + ([stop_column] if any(r.get("stop_reason") for (m, s), runs in groups.items() if s == k
                                                          for r in runs.values()) else [])
            body += titled(k_table(groups, k, PRIOR_COLUMNS, extra=extra), f"**{label}**: the prior and its likelihood")
            if has_values(groups, k, DEFAULT_COLUMNS):
                body += titled(k_table(groups, k, DEFAULT_COLUMNS), f"**{label}**: samples at the default setting")
            if has_values(groups, k, TUNED_COLUMNS):
                body += titled(k_table(groups, k, TUNED_COLUMNS, extra=[("setting (seeds)", lambda runs: tally(runs, "sampling_tuned"))]),
                               f"**{label}**: samples at each prior's tuned setting (fresh set)")
        notes += [f"`{prior}` prior, {note}" if several else note for note in findings(groups)]
        tag, named = (f"{prior}_", f", `{prior}` prior") if several else ("", "")
        for found, source in ((figures, "samples"), (tuned_figures, "samples_tuned"), (curves, "validation_nll")):
            found += [(label + named, path) for label, path in run_figures(
                groups, figures_dir, source=f"{source}.png", name=f"generation_{source}_{tag}" + "{method}_K{k}.png", kept=kept)]
    body += ["### SimVQ's tokens against each tokenizer's (computed from the numbers)", "", *[f"- {note}" for note in notes], ""]
    return (body + figure_section("Held-out NLL over training (the best checkpoint, the one measured, marked)", curves, out_dir)
            + figure_section("Samples", figures, out_dir) + figure_section("Samples at the tuned setting", tuned_figures, out_dir))


def write_generation_report(results: str | Path, out: str | Path = "docs/results.md", *,
                            figures_dir: str | Path = "docs/figures") -> Path:
    """``simvq bench generation``'s CSV -> the generation block of ``out`` (tables, verdicts, sample grids)."""
    return write_section(results, out, figures_dir, render=render, markers=(BEGIN, END), heading=HEADING,
                         option="--generation", command="simvq bench generation")
