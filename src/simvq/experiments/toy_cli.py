"""`simvq toy {2d,cluster,analysis}`: the small experiments behind docs/toy.md and docs/analysis.md.

Each subcommand writes PNG (and GIF) figures plus one JSON of the measured numbers into ``--out``.
"""

from __future__ import annotations

from pathlib import Path

from ..utils import save_figure, write_json


def _save(figure, path: Path) -> None:
    save_figure(figure, path, dpi=90)


def _check_options(args) -> None:
    """The options every toy experiment takes (and those of its own it has), refused naming the option."""
    from ..utils import check_count, check_out_dir_option

    check_out_dir_option(args.out, "--out")
    check_count(args.threads, "--threads")
    for seed in args.seeds:
        check_count(seed, "--seeds", minimum=0)
    for name, minimum in (("steps", 1), ("codebook_size", 2), ("fmnist_samples", 2), ("pca_dim", 1), ("batch_size", 1)):
        check_count(getattr(args, name, None), f"--{name.replace('_', '-')}", minimum=minimum)
    for size in getattr(args, "fmnist_codebook_sizes", None) or []:
        check_count(size, "--fmnist-codebook-sizes", minimum=2)


def run_2d(args) -> int:
    import torch

    _check_options(args)
    from .toy import DATASETS, animate_toy, compare_toy, plot_toy

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    datasets = DATASETS if args.dataset == "all" else (args.dataset,)
    report: dict = {}
    for dataset in datasets:
        report[dataset] = {"usage_by_seed": {}, "runs": {}}
        for seed in args.seeds:
            results = compare_toy(
                dataset, steps=args.steps, seed=seed, codebook_size=args.codebook_size,
                data_scale=args.data_scale, snapshot_every=max(1, args.steps // 40), progress=args.progress,
            )
            if seed == args.seeds[0]:  # figures for the first seed; numbers for all
                _save(plot_toy(results), out / f"toy_{dataset}.png")
                if args.gif:
                    animate_toy(results, out / f"toy_{dataset}.gif")
            report[dataset]["runs"][f"seed{seed}"] = {method: result.summary() for method, result in results.items()}
            for method, result in results.items():
                report[dataset]["usage_by_seed"].setdefault(method, []).append(float(result.usage[-1]))
            line = ", ".join(f"{m} {r.summary()['final_used_codes']}/{args.codebook_size}" for m, r in results.items())
            print(f"{dataset} seed {seed}: codes used - {line}")
    write_json(out / "toy.json", report)
    return 0


def standardise(x):
    """Centre and divide by one global std (keeps the geometry; puts every data set at unit scale)."""
    x = x - x.mean(0)
    return x / x.std()


def run_cluster(args) -> int:
    import torch

    from .clustering import compare_clustering, gaussian_mixture, plot_clustering

    _check_options(args)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # name -> (data for a seed, codebook size). Separable mixtures: K <= dim + 1 (an affine W(C) can
    # place every code anywhere), K = modes > dim + 1 in 2-D (it cannot), high-dim, and K >> modes.
    mixtures = {
        "mixture2d_3modes_k3": (3, 2, 3), "mixture2d_8modes_k8": (8, 2, 8),
        "mixture16d_8modes_k8": (8, 16, 8), "mixture16d_8modes_k64": (8, 16, 64),
    }
    features = _fmnist_features(args)
    experiments = {
        name: (lambda seed, m=modes, d=dim: standardise(
            gaussian_mixture(3000, num_modes=m, dim=d, separation=4.0, std=0.3 if d == 2 else 0.5, seed=seed)[0]), size)
        for name, (modes, dim, size) in mixtures.items()
    }
    for size in args.fmnist_codebook_sizes:
        experiments[f"fmnist_pca{args.pca_dim}_k{size}"] = (lambda seed: features, size)
    report: dict = {}
    for name, (make_data, size) in experiments.items():
        report[name] = {"codebook_size": size, "runs": {}, "distortion_over_kmeans_by_seed": {}, "usage_by_seed": {}}
        for seed in args.seeds:
            data = make_data(seed)
            fits = compare_clustering(data, size, steps=args.steps, seed=seed)
            reference = fits["kmeans"].distortion
            report[name]["num_points"], report[name]["dim"] = len(data), data.shape[1]
            report[name]["runs"][f"seed{seed}"] = {
                method: {**fit.summary(), "distortion_over_kmeans": fit.distortion / reference} for method, fit in fits.items()
            }
            for method, fit in fits.items():
                report[name]["distortion_over_kmeans_by_seed"].setdefault(method, []).append(fit.distortion / reference)
                report[name]["usage_by_seed"].setdefault(method, []).append(fit.usage)
            if seed == args.seeds[0]:
                _save(plot_clustering(fits, data, title=f"{name}, seed {seed}"), out / f"cluster_{name}.png")
            line = ", ".join(f"{m} {f.distortion / reference:.2f}x/{f.usage:.0%}" for m, f in fits.items())
            print(f"{name} seed {seed}: distortion vs KMeans / usage - {line}")
    write_json(out / "clustering.json", report)
    return 0


def _fmnist_features(args):
    from .clustering import load_fashion_mnist_pixels, pca_features

    return standardise(pca_features(load_fashion_mnist_pixels("test", limit=args.fmnist_samples), args.pca_dim))


def run_analysis(args) -> int:
    import torch

    _check_options(args)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    features = _fmnist_features(args)
    report: dict = {}
    fit = _analyse_spectrum(args, features, out, report)
    _analyse_index_correspondence(fit, features, out, report)
    _analyse_movement(args, features, out, report)
    write_json(out / "analysis.json", report)
    return 0


def _analyse_spectrum(args, features, out: Path, report: dict):
    """1. The spectrum of W while SimVQ is fitted to Fashion-MNIST PCA features, and on the 2-D toy."""
    import torch

    from .analysis import SpectrumTracker, effective_rank
    from .clustering import fit_quantizer
    from .toy import ToyConfig, build_toy_quantizer, train_toy

    tracker = SpectrumTracker(every=max(1, args.steps // 50))
    tracker(0, build_toy_quantizer("simvq", args.codebook_size, dim=args.pca_dim, seed=args.seeds[0]))
    fit = fit_quantizer(features, "simvq", args.codebook_size, steps=args.steps, seed=args.seeds[0], callback=tracker)
    _save(tracker.figure(), out / "spectrum.png")
    # W stretches the unit-variance cloud C towards the data: compare its singular values with the
    # standard deviations of the features (PCA features are uncorrelated, so these are the axes)
    feature_std = features.std(0).sort(descending=True).values.double()
    final_values = tracker.singular_values[-1]
    log_correlation = torch.corrcoef(torch.stack([final_values.log(), feature_std.log()]))[0, 1]
    report["spectrum"] = {
        **tracker.as_dict(), "final_usage": fit.usage, "final_distortion": fit.distortion,
        "feature_std_sorted": feature_std.tolist(), "log_correlation_singular_values_vs_feature_std": float(log_correlation),
        "feature_std_effective_rank": effective_rank(feature_std),
    }
    print(f"effective rank of W: start {tracker.effective_ranks[0]:.2f}, end {tracker.effective_ranks[-1]:.2f} (max {args.pca_dim}); "
          f"of the feature stds {effective_rank(feature_std):.2f}; corr(log s_W, log std) {float(log_correlation):.3f}")

    # the same on the 2-D toy, where W is 2 x 2 and the encoder adapts too
    toy_tracker = SpectrumTracker(every=10)
    toy = train_toy(ToyConfig(dataset="square", method="simvq", seed=args.seeds[0], snapshot_every=1000), callback=toy_tracker)
    report["toy_spectrum"] = {**toy_tracker.as_dict(), "final_usage": float(toy.usage[-1])}
    print(f"toy square SimVQ: effective rank of W at step {toy_tracker.steps[0]} "
          f"{toy_tracker.effective_ranks[0]:.3f} -> {toy_tracker.effective_ranks[-1]:.3f} (max 2), "
          f"singular values {[round(v, 3) for v in toy_tracker.singular_values[-1].tolist()]}")
    return fit


def _analyse_index_correspondence(fit, features, out: Path, report: dict) -> None:
    """2. Index i of C is code i of W(C), on the SimVQ just fitted."""
    import torch

    from .analysis import index_correspondence, plot_index_correspondence

    correspondence = index_correspondence(fit.quantizer.eval(), features)
    _save(plot_index_correspondence(correspondence), out / "index_correspondence.png")
    report["index_correspondence"] = {k: v for k, v in correspondence.items() if not isinstance(v, torch.Tensor)}
    print(f"index correspondence: counts equal {correspondence['counts_equal']}, usage via codes {correspondence['usage_codes']:.3f}, "
          f"via C alone {correspondence['usage_basis_only']:.3f}, max |decode - W(C)| {correspondence['max_decode_error']:.2e}")


def _analyse_movement(args, features, out: Path, report: dict) -> None:
    """3. Who moves after one SGD step on the codebook loss at initialisation, and over a whole fit."""
    import torch

    from .analysis import MovementTracker, code_movement, plot_code_movement
    from .clustering import fit_quantizer
    from .toy import build_toy_quantizer

    batch = features[torch.randperm(len(features), generator=torch.Generator().manual_seed(args.seeds[0]))[: args.batch_size]]
    movements = {
        method: code_movement(build_toy_quantizer(method, args.codebook_size, dim=args.pca_dim, seed=args.seeds[0]), batch, lr=args.lr)
        for method in ("vq", "simvq")
    }
    # over a whole fit: how many codes move per step, how many never move (Adam, as in section 1)
    trackers = {method: MovementTracker() for method in ("vq", "simvq")}
    for method, tracker in trackers.items():
        tracker(0, build_toy_quantizer(method, args.codebook_size, dim=args.pca_dim, seed=args.seeds[0]))
        fit_quantizer(features, method, args.codebook_size, steps=args.steps, seed=args.seeds[0], callback=tracker)
    report["movement_over_training"] = {
        method: {
            "mean_fraction_moved_per_step": sum(t.fraction_moved) / len(t.fraction_moved),
            "fraction_never_moved_at_end": t.fraction_never_moved[-1],
            "fraction_moved_at_steps": {s: t.fraction_moved[s - 1] for s in (1, 10, 100, args.steps) if s <= len(t.fraction_moved)},
        }
        for method, t in trackers.items()
    }
    for method in trackers:
        print(f"{method} over {args.steps} steps: {report['movement_over_training'][method]}")
    _save(plot_code_movement(movements, trackers), out / "code_movement.png")
    report["code_movement"] = {m: {k: v for k, v in r.items() if k.startswith(("fraction", "mean"))} for m, r in movements.items()}
    for method, result in movements.items():
        print(f"{method}: {result['fraction_selected']:.1%} selected, {result['fraction_moved']:.1%} moved after one step")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("toy", help="2-D toy, clustering and analysis experiments (figures + JSON)")
    commands = parser.add_subparsers(dest="toy_command", required=True)

    def common(sub, default_out):
        sub.add_argument("--out", default=default_out, help="directory for PNG/GIF/JSON")
        sub.add_argument("--seeds", type=int, nargs="+", default=[0], help="figures use the first; JSON has all")
        sub.add_argument("--threads", type=int, default=1, help="torch threads (keep it low on shared machines)")

    toy2d = commands.add_parser("2d", help="plain VQ vs SimVQ vs SimVQ with C trained on 2-D data")
    common(toy2d, "runs/toy")
    toy2d.add_argument("--dataset", default="all", choices=["all", "square", "ring", "mixture"])
    toy2d.add_argument("--steps", type=int, default=1000)
    toy2d.add_argument("--codebook-size", type=int, default=64)
    toy2d.add_argument("--data-scale", type=float, default=0.2)
    toy2d.add_argument("--no-gif", dest="gif", action="store_false", help="skip the animated GIF")
    toy2d.add_argument("--progress", action="store_true", help="tqdm bars per run")
    toy2d.set_defaults(func=run_2d)

    def fmnist_features(sub, steps):
        common(sub, "runs/toy")
        sub.add_argument("--steps", type=int, default=steps)
        sub.add_argument("--fmnist-samples", type=int, default=5000, help="Fashion-MNIST test images used")
        sub.add_argument("--pca-dim", type=int, default=32, help="PCA features of those images")

    cluster = commands.add_parser("cluster", help="quantizers as clustering vs scikit-learn KMeans")
    fmnist_features(cluster, 1500)
    cluster.add_argument("--fmnist-codebook-sizes", type=int, nargs="+", default=[16, 256])
    cluster.set_defaults(func=run_cluster)

    analysis = commands.add_parser("analysis", help="spectrum of W, code indices, per-code movement")
    fmnist_features(analysis, 1000)
    analysis.add_argument("--codebook-size", type=int, default=256)
    analysis.add_argument("--batch-size", type=int, default=64)
    analysis.add_argument("--lr", type=float, default=0.1)
    analysis.set_defaults(func=run_analysis)
