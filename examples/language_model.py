"""Which documents does a small language model rely on, for reasoning vs facts?

The workflow of influence studies on large language models (Grosse et al.,
2023; Ruis et al., 2024), at laptop scale and on generated data:

1. a corpus of *procedural* documents (worked additions and subtractions, in
   three formats each) and *factual* documents ("the capital of X is Y",
   "the currency of X is the Z", with invented names, one document per fact);
2. a character-level causal transformer, written with ``nn.Linear``
   projections, trained on it;
3. reasoning queries (additions and subtractions the corpus never shows) and
   factual queries (one per fact), each a prompt and a completion;
4. EK-FAC influence with ``measurement="log_prob"``: the log-probability of
   the completion given the prompt. A document *supports* a completion when
   removing it would lower that log-probability, so supporting documents
   have negative influence (see the measurements table in the docs);
5. TF-IDF candidates (``dataval.text``), ``query_rank``, ``by_layer`` and
   the cross-query analysis (``dataval.analysis``).

It prints the mean correlation of document influence between queries of
the same task, for reasoning and for factual tasks, and where the document
stating a fact ranks for its query. ``python examples/language_model.py
--plot FILE.png`` also draws the query-by-query correlation matrix.
Runs in well under three minutes on two CPU cores (80 s on a shared machine).
"""

import argparse
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from dataval import EKFACInfluence
from dataval.analysis import group_correlations, group_influence, query_correlations
from dataval.text import score_candidates, tfidf_candidates

LENGTH = 40  # tokens per row (inputs), documents padded
PAD, BOS, EOS = 0, 1, 2
CHARS = " +-=.:0123456789abcdefghijklmnopqrstuvwxyz"
STOI = {c: i + 3 for i, c in enumerate(CHARS)}
VOCAB = len(CHARS) + 3

ARITHMETIC = {
    "add": ["{a}+{b}={c}", "{a} plus {b} is {c}", "add {a} and {b}: {c}"],
    "sub": ["{a}-{b}={c}", "{a} minus {b} is {c}", "take {b} from {a}: {c}"],
}
FACTS = {
    "capital": "the capital of {x} is {y}.",
    "currency": "the currency of {x} is the {y}.",
}


# ---------------------------------------------------------------- the corpus
def _name(rng, syllables):
    consonants, vowels = "bcdfgklmnprstvz", "aeiou"
    return "".join(
        rng.choice(list(consonants)) + rng.choice(list(vowels))
        for _ in range(syllables)
    )


def make_corpus(n_pairs=50, n_facts=20, n_queries=6, random_state=0):
    """Training documents and queries (prompt, completion, task, answer doc)."""
    rng = np.random.RandomState(random_state)
    docs, queries = [], []
    for task, formats in ARITHMETIC.items():
        pairs = [(a, b) for a in range(10) for b in range(10)]
        if task == "sub":
            pairs = [(a + b, b) for a, b in pairs]
        order = rng.permutation(len(pairs))
        for k in order[:n_pairs]:
            a, b = pairs[k]
            c = a + b if task == "add" else a - b
            for f in range(len(formats)):
                docs.append((formats[f].format(a=a, b=b, c=c), task))
        for k in order[n_pairs : n_pairs + n_queries]:
            a, b = pairs[k]
            c = a + b if task == "add" else a - b
            prompt = formats[0].format(a=a, b=b, c="")
            queries.append((prompt, str(c), task, None))
    names = set()
    for task, template in FACTS.items():
        for k in range(n_facts):
            x = _name(rng, 2)
            while x in names:
                x = _name(rng, 2)
            names.add(x)
            y = _name(rng, 2)
            text = template.format(x=x, y=y)
            if k < n_queries:
                prompt = text[: text.rindex(" ") + 1]
                queries.append((prompt, text[len(prompt) :], task, len(docs)))
            docs.append((text, task))
    return docs, queries


def encode(texts):
    """``(X, y)``: inputs ``(n, LENGTH)`` and next-token targets, -100 on padding."""
    X = torch.full((len(texts), LENGTH + 1), PAD)
    for i, text in enumerate(texts):
        tokens = [BOS] + [STOI[c] for c in text] + [EOS]
        X[i, : len(tokens)] = torch.tensor(tokens)
    y = X[:, 1:].clone()
    y[y == PAD] = -100
    return X[:, :-1].contiguous(), y


def encode_queries(queries):
    """Queries as rows whose targets are the completion only (prompt: -100)."""
    X, y = encode([prompt + completion for prompt, completion, _, _ in queries])
    for i, (prompt, completion, _, _) in enumerate(queries):
        keep = torch.zeros(LENGTH, dtype=torch.bool)
        # input position t predicts character t of the text (after BOS)
        keep[len(prompt) : len(prompt) + len(completion)] = True
        y[i, ~keep] = -100
    return X, y


# ----------------------------------------------------------------- the model
class Block(nn.Module):
    """Pre-norm causal self-attention and an MLP, all projections nn.Linear."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.query, self.key = nn.Linear(d, d), nn.Linear(d, d)
        self.value, self.out = nn.Linear(d, d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, h):
        B, T, d = h.shape
        x = self.norm1(h)

        def split(z):  # (B, T, d) -> (B, heads, T, d / heads)
            return z.view(B, T, self.heads, -1).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        future = torch.ones(T, T, dtype=torch.bool, device=h.device).triu(1)
        attention = logits.masked_fill(future, float("-inf")).softmax(-1)
        h = h + self.out((attention @ v).transpose(1, 2).reshape(B, T, d))
        return h + self.down(F.gelu(self.up(self.norm2(h))))


class TinyLM(nn.Module):
    """Tokens ``(B, T)`` -> next-token logits ``(B, T, VOCAB)``."""

    def __init__(self, d=32, heads=2, n_blocks=1):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.position = nn.Parameter(torch.randn(LENGTH, d) * 0.02)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(n_blocks)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, VOCAB)

    def forward(self, tokens):
        h = self.embed(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def train(model, X, y, epochs=200, batch_size=120, lr=1e-2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    steps = epochs * -(-len(X) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(X), generator=generator).split(batch_size):
            logits = model(X[rows])
            loss = F.cross_entropy(logits.transpose(1, 2), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def completion_accuracy(model, X, y):
    """Fraction of queries whose completion the model predicts exactly (greedy)."""
    with torch.no_grad():
        predicted = model(X).argmax(-1)
    kept = y != -100
    return float(((predicted == y) | ~kept).all(1).float().mean())


# -------------------------------------------------------------- the analysis
def support_rank(scores, position):
    """Rank of the document at ``position`` by support (most negative first)."""
    values = scores.to_numpy()
    return int((values < values[position]).sum()) + 1


def main(plot=None, n_candidates=40):
    start = time.perf_counter()
    torch.manual_seed(0)
    docs, queries = make_corpus()
    texts = [text for text, _ in docs]
    X, y = encode(texts)
    X_q, y_q = encode_queries(queries)
    query_index = pd.Index(
        [f"{task}: {prompt}{completion}" for prompt, completion, task, _ in queries],
        name="test",
    )
    tasks = pd.Series([task for _, _, task, _ in queries], index=query_index)
    kind = {"add": "reasoning", "sub": "reasoning"}
    kinds = tasks.map(lambda t: kind.get(t, "factual"))

    model = train(TinyLM(), X, y)
    trained = time.perf_counter()
    print(
        f"{len(docs)} documents, {len(queries)} queries; trained in "
        f"{trained - start:.0f} s"
    )
    for name in ("reasoning", "factual"):
        rows = torch.tensor((kinds == name).to_numpy())
        accuracy = completion_accuracy(model, X_q[rows], y_q[rows])
        print(f"  greedy completion accuracy on {name} queries: {accuracy:.2f}")

    ekfac = EKFACInfluence(measurement="log_prob", random_state=0).fit(model, X, y)
    fitted = time.perf_counter()
    scores = ekfac.score(X_q, y_q).set_axis(query_index, axis=0)
    scored = time.perf_counter()
    print(
        f"EK-FAC over {len(ekfac.layers_)} Linear layers: fit "
        f"{fitted - trained:.1f} s, score {scored - fitted:.1f} s"
    )

    # the cross-query analysis: rows of one task vs the other tasks
    table = group_correlations(scores, tasks)
    within = pd.Series(np.diag(table), index=table.index)
    pairs = query_correlations(scores, tasks)
    across = pairs[pairs["group_a"] != pairs["group_b"]]
    print("\nMean correlation of document influence between queries")
    summary = pd.DataFrame(
        {
            "within task": [
                within[["add", "sub"]].mean(),
                within[["capital", "currency"]].mean(),
            ],
            "tasks": ["add, sub", "capital, currency"],
        },
        index=["reasoning", "factual"],
    )
    print(summary.round(3).to_string())
    print(f"(across different tasks: {across['correlation'].mean():.3f})")

    # does the document stating the fact support its query the most?
    facts = [(i, doc) for i, (_, _, _, doc) in enumerate(queries) if doc is not None]
    ranks = [support_rank(scores.iloc[i], doc) for i, doc in facts]
    candidates = tfidf_candidates(texts, [q[0] + q[1] for q in queries], k=n_candidates)
    in_candidates = np.mean([doc in candidates[i] for i, doc in facts])
    print(
        f"\nFactual queries: the stating document ranks first by support for "
        f"{np.mean(np.array(ranks) == 1):.0%} of them (ranks {ranks}); it is "
        f"among the {n_candidates} TF-IDF candidates for {in_candidates:.0%}"
    )
    by_pair = score_candidates(ekfac, X_q, y_q, candidates)
    full = scores.to_numpy()
    print(
        f"  score_candidates equals score on those pairs: max difference "
        f"{_candidate_difference(by_pair, scores):.1e}"
    )

    supported = group_influence(scores, kinds, kind="harmful", k=5)
    supported["text"] = [texts[j] for j in supported["train"]]
    print("\nDocuments that support a whole group of queries (best mean rank)")
    print(supported[["group", "rank", "mean_rank", "text"]].to_string(index=False))

    # which layers carry the influence
    layers = ekfac.score(X_q, y_q, by_layer=True)
    magnitude = layers.abs().sum(axis=1).unstack("layer")
    magnitude = magnitude.div(magnitude.sum(axis=1), axis=0)
    magnitude.index = kinds.to_numpy()
    print("\nShare of |influence| carried by each layer")
    print(magnitude.groupby(level=0).mean().T.round(3).to_string())

    # query_rank: a sequence's gradient has rank up to LENGTH per layer
    for rank in (1, 4):
        t0 = time.perf_counter()
        ranked = ekfac.set_params(query_rank=rank).score(X_q, y_q)
        elapsed = time.perf_counter() - t0
        r = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(ranked.to_numpy(), full)])
        print(
            f"query_rank={rank}: score {elapsed:.2f} s (full rank "
            f"{scored - fitted:.2f} s), mean row correlation with full rank {r:.3f}"
        )
    ekfac.set_params(query_rank=None)

    if plot:
        _plot(scores, tasks, plot)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return summary, ranks


def _candidate_difference(by_pair, scores):
    """Largest difference between score_candidates and score on the same pairs."""
    rows = by_pair["test"].to_numpy()  # positions: X_q is a tensor
    expected = scores.to_numpy()[rows, by_pair["train"].to_numpy()]
    return float(np.abs(by_pair["influence"].to_numpy() - expected).max())


def _plot(scores, tasks, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = tasks.sort_values(kind="stable").index
    corr = scores.loc[order].T.corr()
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1)
    labels = tasks[order].to_numpy()
    edges = np.flatnonzero(labels[1:] != labels[:-1]) + 0.5
    for edge in edges:
        ax.axhline(edge, color="k", lw=0.8)
        ax.axvline(edge, color="k", lw=0.8)
    centers = [np.flatnonzero(labels == t).mean() for t in pd.unique(labels)]
    ax.set_xticks(centers, pd.unique(labels))
    ax.set_yticks(centers, pd.unique(labels))
    ax.set_title("Correlation of document influence between queries")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"figure written to {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", help="write the correlation matrix to this file")
    main(parser.parse_args().plot)
