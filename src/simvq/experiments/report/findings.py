"""Sentences computed from the numbers: what SimVQ's usage means against an untrained quantizer at
the same K and tokens, whether plain VQ collapsed, what the tests say about reconstruction, and how
much the runs still moved at the end of their budget. Nothing here is written by hand, so the
findings say what the CSV holds, failures included."""

from __future__ import annotations

from ..stats import ALPHA, holm_family, mean_interval, p_text, verdict, welch
from ..sweep import JOINT_TRAINING
from .aggregate import Group, Stat, columns_of, comparable_variant, main_groups, method_key, method_order, number, sort_key
from .tables import MISSING, column_label, count, k_label
from .windows import counts_nearest_codes, group_change

KEEPS = 0.99  # usage whose seeds' 95% interval lies at or above this counts as "keeps ~100% usage"
COLLAPSED = 0.10  # plain VQ whose seeds' 95% interval lies below this fraction of codes counts as collapsed
FEW_CHECK_TOKENS = 10  # progress checks with fewer tokens a code than this cannot follow a row's usage


def pct(s: Stat | None) -> str:
    if s is None:
        return MISSING
    spread = f" ± {100 * s.std:.1f}" if s.n > 1 else ""
    return f"{100 * s.mean:.1f}%{spread} ({s.n} seed{'s' * (s.n > 1)})"


def interval_text(values, scale: float = 100.0, unit: str = "%") -> str:
    """The seeds' 95% interval of the mean, clipped to what a fraction can be."""
    low, high = mean_interval(values)
    return f"95% CI of the mean [{scale * max(low, 0.0):.1f}{unit}, {scale * min(high, 1.0):.1f}{unit}]"


def evenness_note(group: Group, reference: dict | None) -> str:
    """Perplexity / K against the untrained quantizer's at the same K and N, by Welch's test over
    seeds: ≥ 99% usage can be a long tail of codes hit a few times each, which perplexity / K shows
    and usage does not."""
    ratio = group.stat("perplexity_per_code")
    if ratio is None:
        return ""
    text = f" Perplexity / K is {ratio.mean:.3f}"
    if reference and reference.get("perplexity_per_code"):
        ref = reference["perplexity_per_code"]
        text += f" against {ref.mean:.3f} ({ref.n} seed{'s' * (ref.n > 1)}) for the untrained quantizer"
        test = welch(ratio.values, ref.values)
        if test is None:
            text += ": one run, no test"
        elif test.significant:
            side = "less" if test.difference < 0 else "more"
            text += f": the trained tokenizer spreads its tokens {side} evenly than random codes do ({p_text(test.p)}, Welch)"
        else:
            text += f": no significant difference ({p_text(test.p)}, Welch)"
    return text + "."


def simvq_usage_note(group: Group, column, reference: dict | None) -> str | None:
    usage = group.stat("usage")
    if usage is None:
        return None
    interval = mean_interval(usage.values)
    if interval is None:  # one run: its number against the bar, no verdict
        verdict = ("one run, at or above 99%" if usage.mean >= KEEPS else
                   f"one run, {100 * (KEEPS - usage.mean):.1f} percentage points below 99%") + ": no verdict before its seeds land"
    elif interval[0] >= KEEPS:
        verdict = f"keeps ~100% usage (≥ 99%: {interval_text(usage.values)})"
    elif interval[1] < KEEPS:
        verdict = f"does NOT keep ~100% usage: {100 * (KEEPS - usage.mean):.1f} percentage points short of 99% ({interval_text(usage.values)})"
    else:
        verdict = f"no verdict on ≥ 99%: the {interval_text(usage.values)} spans it"
    tokens, ratio = group.stat("tokens"), group.stat("tokens_per_code")
    ref_usage = reference["usage"] if reference else group.stat("usage_reference")
    # without a measured reference at K and N, the row's own: the same N/K on at most 8,192 codes
    where = "at the same K and N" if reference else "at the same N/K (the run's own estimate, on at most 8,192 codes)"
    versus = MISSING if ref_usage is None else f"{pct(ref_usage)} (SimVQ − reference: {100 * (usage.mean - ref_usage.mean):+.1f} points)"
    at50 = group.stat("usage_at_50")
    fixed = f" At 50 tokens per code (subsampled) it is {pct(at50)}." if at50 else ""
    return (f"SimVQ at {k_label(column)}: {pct(usage)} of codes used over N = {count(tokens.mean) if tokens else MISSING} tokens "
            f"(N/K = {count(ratio.mean) if ratio else MISSING}); {verdict}. An untrained quantizer {where} uses "
            f"{versus}.{fixed}{evenness_note(group, reference)}")


def usage_change(before: Group, after: Group, column: str) -> str:
    """One usage statistic from one group of runs to another: both, the change in points, and Welch's test."""
    a, b = before.stat(column), after.stat(column)
    change, test = 100 * (b.mean - a.mean), welch(b.values, a.values)
    if test is None:
        return f"{pct(a)} → {pct(b)} ({change:+.1f} points; one run on a side: no test)"
    said = ("higher" if change > 0 else "lower") if test.significant else "no significant change"
    return f"{pct(a)} → {pct(b)} ({change:+.1f} points, 95% CI [{100 * test.low:+.1f}, {100 * test.high:+.1f}], {p_text(test.p)}: {said})"


def grid_link_note(main: dict[tuple, Group]) -> str | None:
    """The finer grid's rows beside the rest: at a K both grids have, what the grid alone changes; on
    the finer grid, what K alone changes. Usage over all tokens depends on N/K, which the grids differ
    in, so usage at 50 tokens per code stands beside it."""
    links = []
    for method in ("simvq", "vq"):
        fine = sorted((c for m, c in main if m == method and isinstance(c, tuple)), key=sort_key)
        pairs = [(c[0], c, f"at K={c[0]:,}, the recipe's grid → {c[1]} tokens") for c in fine]
        pairs += [(a, b, f"on the {a[1]} grid, K={a[0]:,} → {b[0]:,}") for a, b in zip(fine, fine[1:]) if a[1] == b[1]]
        for before, after, what in pairs:
            if (method, before) in main:
                first, second = main[(method, before)], main[(method, after)]
                said = [f"{title} {usage_change(first, second, column)}" for column, title in
                        (("usage", "usage"), ("usage_at_50", "at 50 tokens per code")) if first.stat(column) and second.stat(column)]
                links += [f"{method} {what}: {', '.join(said)}"] if said else []
    if not links:
        return None
    return "The finer grid beside the recipe's (Welch over seeds): " + "; ".join(links) + "."


def vq_note(main: dict[tuple, Group]) -> str | None:
    """Plain VQ's usage at every K; collapsed where the seeds' 95% interval lies below 10% of the codes
    (one run: its number, no verdict)."""
    vq = {c: g.stat("usage") for (m, c), g in main.items() if m == "vq" and g.stat("usage")}
    if not vq:
        return None
    order = [c for c in columns_of(main) if c in vq]
    intervals = {c: mean_interval(vq[c].values) for c in order}
    collapsed = [c for c in order if intervals[c] is not None and intervals[c][1] < COLLAPSED]
    single = [c for c in order if intervals[c] is None and vq[c].mean < COLLAPSED]
    verdict = (f"collapsed (the seeds' 95% CI of the mean below {100 * COLLAPSED:.0f}% of codes) at {', '.join(map(k_label, collapsed))}"
               if collapsed else f"not shown to collapse below {100 * COLLAPSED:.0f}% at any K with seeds")
    verdict += f"; below {100 * COLLAPSED:.0f}% in one run, no verdict: {', '.join(map(k_label, single))}" if single else ""
    return "Plain VQ usage: " + ", ".join(f"{k_label(c)} {pct(vq[c])}" for c in order) + f" — {verdict}."


def psnr_note(main: dict[tuple, Group], column) -> str | None:
    """SimVQ against every method at one K on PSNR, by Welch's test with Holm's correction over the K's
    tests (family-wise α, as the table's verdicts): a raw verdict the correction does not keep is listed
    as such; single runs are listed apart."""
    simvq = main.get(("simvq", column))
    psnr = simvq.stat("psnr") if simvq else None
    if psnr is None:
        return None
    rivals = {m: stat for m in method_order(m for m, c in main if c == column and m != "simvq") if (stat := main[(m, column)].stat("psnr"))}
    tested = holm_family(psnr.values, {m: stat.values for m, stat in rivals.items()})
    adjusted = {m: p for m, (_, p) in tested.items()}
    higher, lower, lost, same, untested = [], [], [], [], []
    for method, rival in rivals.items():
        diff, test = psnr.mean - rival.mean, tested[method][0] if method in tested else None
        if test is None:
            untested.append(f"{method} ({diff:+.2f} dB)")
            continue
        holm_text = f", Holm {p_text(adjusted[method])}" if len(tested) > 1 else ""
        if adjusted[method] < ALPHA:
            (higher if diff > 0 else lower).append(f"{method} ({diff:+.2f} dB, {p_text(test.p)}{holm_text})")
        else:  # how large a difference the seeds could not rule out
            label = f"{method} ({diff:+.2f} dB, 95% CI [{test.low:+.2f}, {test.high:+.2f}], {p_text(test.p)}{holm_text})"
            (lost if test.significant else same).append(label)
    parts = [f"higher than {', '.join(higher)}" if higher else "", f"lower than {', '.join(lower)}" if lower else "",
             f"significant alone but not after Holm's correction: {', '.join(lost)}" if lost else "",
             f"not different from {', '.join(same)}" if same else "",
             f"not tested against {', '.join(untested)} (one run on a side)" if untested else ""]
    parts = [p for p in parts if p]
    if not parts:
        return None
    family = f", Holm's correction over the {len(tested)} tests at this K" if len(tested) > 1 else ""
    return (f"PSNR at {k_label(column)} (Welch, α = {ALPHA}{family}): SimVQ's {psnr.mean:.2f} dB ({psnr.n} seed{'s' * (psnr.n > 1)}): "
            + "; ".join(parts) + ".")


def joint_training_note(groups: dict[tuple, Group], size: int) -> str | None:
    """The reviewers' question, whether training C jointly with W collapses the codebook: that
    ablation's usage, evenness and PSNR beside SimVQ's (C frozen) and plain VQ's usage at the same
    K, each difference by Welch's test over seeds (one run on a side: none)."""
    joint, frozen, vq = (groups.get(key) for key in ((JOINT_TRAINING, "simvq", size), ("main", "simvq", size), ("main", "vq", size)))
    if joint is None or frozen is None or joint.stat("usage") is None:
        return None
    parts = []
    for name, column, scale, digits, unit in (("usage", "usage", 100.0, 1, "%"), ("perplexity / K", "perplexity_per_code", 1.0, 3, ""),
                                              ("PSNR", "psnr", 1.0, 2, " dB")):
        mine, base = joint.stat(column), frozen.stat(column)
        if mine is not None and base is not None:
            said = verdict(mine.values, base.values, scale=scale, digits=digits, names=("training C", "freezing C"))
            parts.append(f"{name} {mine.mean * scale:.{digits}f}{unit} ({mine.n}) against {base.mean * scale:.{digits}f}{unit} "
                         f"({base.n}): {said}")
    vq_usage = vq.stat("usage") if vq else None
    plain = f" Plain VQ at that K uses {pct(vq_usage)} of its codes." if vq_usage else ""
    return (f"C trained jointly with W (the paper's Remark 4.1) at {k_label(size)}, against SimVQ with C frozen (seeds in "
            f"brackets): {'; '.join(parts)}.{plain}")


def group_label(key: tuple) -> str:
    """A (variant, method, K) group in words: ``simvq K=65,536``, ``simvq K=262,144 (14x14 tokens)``,
    ``simvq K=8,192 (dim=8)``."""
    variant, method, k = key
    return f"{method} {column_label(variant, int(k))}" + ("" if comparable_variant(variant) else f" ({variant})")


def convergence_note(groups: dict[tuple, Group], windows: dict[str, list[dict]] | None = None) -> str | None:
    """How much the runs still moved over their last 20% of steps (rows of the fixed-budget protocol):
    on the progress checks, and in the runs' own logging windows (``windows``), which count more
    tokens a code than the checks and so follow usage where the checks cannot."""
    def moves(column: str) -> list[tuple[float, tuple]]:
        return [(abs(x), key) for key, g in groups.items() for x in (g.stat(column).values if g.stat(column) else ())]

    if not moves("psnr_last20"):
        return None
    psnr, usage = sorted(x for x, _ in moves("psnr_last20")), [x for x, _ in moves("usage_last20")]
    worst = max(moves("psnr_last20"))
    text = (f"Over the last 20% of their budget the runs' PSNR moved by at most {max(psnr):.2f} dB (median "
            f"{psnr[len(psnr) // 2]:.2f} dB; largest: {group_label(worst[1])})")
    if usage:
        text += f" and their usage on the check images by at most {100 * max(usage):.1f} points"
    text += ": each row is final for its budget, not a converged optimum."
    sparse = {key: ratio for key, g in groups.items() for r in g.rows
              if (tokens := number(r.get("check_tokens"))) and (ratio := tokens / int(key[2])) < FEW_CHECK_TOKENS}
    if sparse:
        places = sorted({(int(key[2]), key[0] != "main", key[0], ratio) for key, ratio in sparse.items() if comparable_variant(key[0])})
        text += (" The checks count too few tokens a code to follow usage at "
                 + "; ".join(f"{column_label(variant, k)}: {ratio:.1f} a code" for k, _, variant, ratio in places)
                 + ". There the usage change over the last 20% says little about the full count's.")
    return text + window_note(groups, windows or {}, set(sparse))


def window_note(groups: dict[tuple, Group], windows: dict[str, list[dict]], sparse: set[tuple]) -> str:
    """The logging windows' usage change over the last 20%: the largest over every row, and each
    group's (seed mean ± std) where the checks are too sparse to follow usage."""
    changes = {key: found for key, g in groups.items() if (found := group_change(g.rows, windows))}
    if not changes:
        return ""
    tokens = sorted({window for _, window in changes.values()})
    sampled = sorted({method for _, method, _ in groups if not counts_nearest_codes(method)})
    largest = max(((abs(x), key) for key, (stat, _) in changes.items() for x in stat.values))
    text = (f" In the runs' own logging windows during training ({' or '.join(f'{t:,}' for t in tokens)} training tokens a window; "
            f"the window at 80% of the budget and the last count the same tokens), usage moved by at most {100 * largest[0]:.1f} "
            f"points over the last 20% (largest: {group_label(largest[1])}; {len(changes)} of {len(groups)} groups have their windows"
            + (f"; {', '.join(sampled)}: the windows count the codes sampled in training, not the nearest, and are left out" if sampled else "")
            + ")")
    order = sorted(changes, key=lambda key: (int(key[2]), key[0] != "main", key[0], method_key(key[1])))
    followed = [(key, *changes[key]) for key in order if key in sparse]
    if followed:
        text += "; where the checks are too sparse: " + ", ".join(
            f"{group_label(key)} {100 * stat.mean:+.1f}{f' ± {100 * stat.std:.1f}' if stat.n > 1 else ''} ({stat.n} seed{'s' * (stat.n > 1)}, "
            f"{window / int(key[2]):.1f} tokens a code)" for key, stat, window in followed)
    return text + "."


def findings(groups: dict[tuple, Group], refs: dict | None = None, windows: dict[str, list[dict]] | None = None) -> list[str]:
    main, refs = main_groups(groups), refs or {}
    columns = columns_of(main)
    simvq = [simvq_usage_note(main[("simvq", c)], c, refs.get(c)) for c in columns if ("simvq", c) in main]
    joint = [joint_training_note(groups, size) for size in sorted({k for (v, m, k) in groups if v == JOINT_TRAINING})]
    notes = [*simvq, vq_note(main), grid_link_note(main), *(psnr_note(main, c) for c in columns), *joint, convergence_note(groups, windows)]
    return [note for note in notes if note]
