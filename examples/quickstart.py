"""Find mislabeled rows in a data set with influence functions.

The 8x8 digits of scikit-learn, with 10 % of the labels flipped on purpose.
A logistic regression is trained on the noisy labels; ``ExactInfluence``
computes each row's self-influence ``(1/n) g_j^T (H + damping I)^{-1} g_j``,
the amount the model had to bend to fit that row. Wrong labels stand out.
"""

from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from dataval import ExactInfluence
from dataval.datasets import load_mislabeled_digits

X, y, is_flipped = load_mislabeled_digits(noise=0.1, random_state=0, as_frame=True)
model = LogisticRegression(C=0.1, max_iter=2000).fit(X, y)

influence = ExactInfluence(damping=1e-3).fit(model, X, y)
suspicion = influence.self_influence()

n_inspect = int(0.1 * len(X))
suspects = suspicion.nlargest(n_inspect).index
report = X.loc[suspects[:20], []].assign(
    label=y[suspects[:20]],
    predicted=model.predict(X.loc[suspects[:20]]),
    self_influence=suspicion[suspects[:20]],
    truly_flipped=is_flipped[suspects[:20]],
)
print("The 20 most suspicious training rows:")
print(report.to_string())
found = is_flipped[suspects].mean()
print(
    f"\nOf the {n_inspect} most suspicious rows (10 % of the data), "
    f"{found:.0%} are truly flipped; {is_flipped.sum()} of {len(X)} labels were "
    f"flipped, so picking at random would find 10 %."
)
print(
    f"ROC AUC of self-influence for flipped labels: {roc_auc_score(is_flipped, suspicion):.3f}"
)
