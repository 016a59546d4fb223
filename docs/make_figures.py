"""Draw the figures of the label-audit guide into ``docs/_static/figures``.

Run by ``docs/conf.py`` when a figure is missing or older than this script
(a few seconds on a laptop); ``python docs/make_figures.py`` redraws them all.
"""

import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIGURES = HERE / "_static" / "figures"
NAMES = (
    "suspects_images.png",
    "suspects_table.png",
    "detection_curves.png",
    "compare_estimators.png",
)


def stale():
    """Whether a figure is missing or older than this script."""
    made = Path(__file__).stat().st_mtime
    return any(
        not (FIGURES / name).exists() or (FIGURES / name).stat().st_mtime < made
        for name in NAMES
    )


def main():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from sklearn.datasets import load_breast_cancer, load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from dataval import ExactInfluence, TracIn
    from dataval.datasets import flip_labels, load_mislabeled_digits
    from dataval.filters import find_label_issues, plot_suspects
    from dataval.metrics import plot_detection_curve
    from dataval.model_selection import compare_estimators, plot_comparison

    warnings.filterwarnings("ignore")
    FIGURES.mkdir(parents=True, exist_ok=True)

    # images: 600 digits, 10 % flipped
    X, y, flipped = load_mislabeled_digits(noise=0.1, as_frame=True)
    X, y, flipped = X.iloc[:600], y.iloc[:600], flipped.iloc[:600]
    model = LogisticRegression(C=0.1, max_iter=1000)
    issues = find_label_issues(model, X, y)
    figure = plot_suspects(issues, X, is_mislabeled=flipped, n=10)
    figure.savefig(FIGURES / "suspects_images.png", dpi=90)

    # detection curves where the methods differ: 20 % class-conditional flips
    _, clean, _ = load_mislabeled_digits(noise=0.0, as_frame=True)
    y_pairs, flipped = flip_labels(
        clean.iloc[:600], 0.2, random_state=0, kind="class-conditional"
    )
    ax = None
    for method in ("auto", "loss", "cross-fit", "self"):
        ranked = find_label_issues(model, X, y_pairs, method=method).sort_index()
        name = "default" if method == "auto" else method
        ax = plot_detection_curve(ranked["score"], flipped, ax=ax, label=name)
    ax.set_xlim(0, 0.5)
    ax.set_title("digits, 20 % class-conditional flips", fontsize=10)
    ax.figure.savefig(FIGURES / "detection_curves.png", dpi=90)

    # a table: breast cancer with string ids and labels, 5 % flipped
    data = load_breast_cancer(as_frame=True)
    index = pd.Index([f"patient-{i:03d}" for i in range(len(data.frame))], name="id")
    X = data.data.set_axis(index)
    y = pd.Series(data.target_names[data.target], index=index, name="diagnosis")
    y, _ = flip_labels(y, 0.05, random_state=0)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    figure = plot_suspects(find_label_issues(pipe, X, y), X, n=12)
    figure.savefig(FIGURES / "suspects_table.png", dpi=90)

    X, y = load_iris(return_X_y=True)
    iris = make_pipeline(
        StandardScaler(), LogisticRegression(solver="newton-cholesky", tol=1e-8)
    )
    results = compare_estimators(
        {"exact": ExactInfluence(), "tracin": TracIn()},
        iris,
        X,
        y,
        scoring=["lds", "mislabel_auc"],
        cv=3,
        n_subsets=10,
        random_state=0,
    )
    plot_comparison(results).savefig(FIGURES / "compare_estimators.png", dpi=90)
    plt.close("all")


if __name__ == "__main__":
    sys.exit(main())
