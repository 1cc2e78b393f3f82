"""Say when training has not fit the data better than the label frequencies alone: a sign of a collapsed run.

On all-mpnet-base-v2 the every-layer prefix sometimes collapsed in its first epoch (docs/RESULTS.md, second
scale point): dev scores at chance, the training loss at the entropy of the labels or rising, with nothing in
the log to say so. The yardstick is the cross-entropy of a model that ignores its input and predicts each label
with its training frequency. A loss not clearly under it means training has not fit the data better than that;
it does not prove the model learned nothing (a multiple-choice head can rank COPA's choices well above chance
with a loss still near ln 2: an MPNet run at 72 % dev logged batch losses of 0.69 in its second epoch), so the
warning says what the loss shows and leaves the verdict to the dev scores beside it. Not "no lower": a collapsed
run predicts just those frequencies, so its loss sits at the yardstick, a little below it at times (an MPNet
SST-2 run at chance ended its epochs on batch losses of 0.688 / 0.697 / 0.677, the yardstick of its 4,000
training sentences being 0.688).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from ptuning.core.config import Method
from ptuning.core.kinds import HeadKind
from ptuning.tasks.base import Features, Task

IGNORED_LABEL = -100  # token positions the loss skips (special tokens, sub-words after the first)
MARGIN = 0.05  # a loss must be more than 5 % under the yardstick to count as having learned something
ADVICE = "lower --learning-rate, add --warmup-ratio 0.1 (and --max-grad-norm 1.0 if clipping was turned off)"
LAYERS_ADVICE = "put the prefix on the top half of the layers (--prefix-layers)"
WHY_ADVICE = "what stopped all-mpnet-base-v2's every-layer prefix from collapsing (docs/RESULTS.md)"


def advice(method: str | None) -> str:
    """What to try, --prefix-layers only where the method reads it: deep prefixes (the other methods refuse the
    flag). Without a method the layer hint names the methods it is for."""
    if method is None:
        return f"{ADVICE}, or with a deep prefix (ptuning-v2, prefix-mlp) {LAYERS_ADVICE}: {WHY_ADVICE}"
    if Method(method).is_deep:
        return f"{ADVICE}, or {LAYERS_ADVICE}: {WHY_ADVICE}"
    return ADVICE


def label_prior_loss(task: Task, features: Features) -> float | None:
    """The cross-entropy (nats) of always predicting the training labels' frequencies, i.e. their entropy;
    None for heads without one label set per prediction (regression, QA, language models), or with fewer than
    two labels in the data (a run that fits a one-label train split perfectly warned at every evaluation)."""
    if task.head in (HeadKind.CLASSIFICATION, HeadKind.MULTIPLE_CHOICE):
        labels: Iterable[int] = (feature["labels"] for feature in features if "labels" in feature)
    elif task.head is HeadKind.TOKEN_CLASSIFICATION:
        labels = (
            label for feature in features for label in feature.get("labels", ()) if label != IGNORED_LABEL
        )
    else:
        return None
    counts = Counter(labels)
    total = sum(counts.values())
    if len(counts) < 2:  # no labels, or one: its entropy is 0, a yardstick no loss gets 5 % under
        return None
    return -sum(count / total * math.log(count / total) for count in counts.values())


def not_learning(
    task_name: str, train_loss: float, prior_loss: float | None, method: str | None = None
) -> str | None:
    """A warning when ``train_loss`` (the mean since the last evaluation) is not more than ``MARGIN`` under
    ``prior_loss``, else None; its advice fits ``method`` (``advice``)."""
    if prior_loss is None or train_loss < (1 - MARGIN) * prior_loss:
        return None
    return (
        f"{task_name}: the training loss since the last evaluation ({train_loss:.4f}) is not even {MARGIN:.0%} "
        f"under always predicting the training labels' frequencies ({prior_loss:.4f}): training has not fit "
        f"{task_name} better than the label frequencies yet. If the dev scores sit at chance too and this lasts, "
        f"{advice(method)}"
    )
