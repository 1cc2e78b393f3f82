"""GLUE tasks (the P-tuning v2 reference's tasks/glue).

Column aliases accept both the GLUE TSV headers and the Hugging Face column names, so a TSV from the
GLUE download and a JSONL export of the hub dataset read the same way.
"""

from __future__ import annotations

from ptuning.tasks.base import Task
from ptuning.tasks.classification import ClassificationTask, RegressionTask

GLUE_HUB = "nyu-mll/glue"

GLUE_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


class GlueTask(ClassificationTask):
    hub_dataset = GLUE_HUB
    splits = GLUE_SPLITS


class Sst2(GlueTask):
    name = "sst2"
    description = "SST-2 sentiment of a movie-review phrase (GLUE)"
    label_names = ["negative", "positive"]
    fields = {"sentence": ("sentence", "content", "text")}  # this copy's dev/test header says 'content'
    hub_config = "sst2"


class Cola(GlueTask):
    name = "cola"
    description = "CoLA grammatical acceptability (GLUE); metric Matthews correlation"
    label_names = ["unacceptable", "acceptable"]
    fields = {"sentence": ("sentence", "text")}
    headerless_columns = ("source", "label", "label_notes", "sentence")  # GLUE's train/dev have no header
    primary_metric = "mcc"
    metric_names = ("mcc", "accuracy")
    hub_config = "cola"


class Mrpc(GlueTask):
    name = "mrpc"
    description = "MRPC paraphrase of two news sentences (GLUE)"
    label_names = ["not_equivalent", "equivalent"]
    fields = {"sentence1": ("sentence1", "#1 String"), "sentence2": ("sentence2", "#2 String")}
    label_columns = ("label", "Quality")
    metric_names = ("accuracy", "f1")
    hub_config = "mrpc"


class Qqp(GlueTask):
    name = "qqp"
    description = "QQP duplicate Quora questions (GLUE)"
    label_names = ["not_duplicate", "duplicate"]
    fields = {"question1": ("question1",), "question2": ("question2",)}
    label_columns = ("label", "is_duplicate")
    metric_names = ("accuracy", "f1")
    hub_config = "qqp"


class Stsb(RegressionTask):
    name = "stsb"
    description = "STS-B sentence similarity score 0-5 (GLUE), regression"
    fields = {"sentence1": ("sentence1",), "sentence2": ("sentence2",)}
    label_columns = ("label", "score")
    primary_metric = "pearson"
    metric_names = ("pearson", "spearman")
    hub_dataset = GLUE_HUB
    hub_config = "stsb"
    splits = GLUE_SPLITS


class Mnli(GlueTask):
    name = "mnli"
    description = "MultiNLI entailment (GLUE); dev/test come matched and mismatched"
    label_names = ["entailment", "neutral", "contradiction"]
    fields = {"premise": ("premise", "sentence1"), "hypothesis": ("hypothesis", "sentence2")}
    label_columns = ("label", "gold_label")
    splits = {
        "train": "train.tsv",
        "dev": "dev_matched.tsv",
        "dev-matched": "dev_matched.tsv",
        "dev-mismatched": "dev_mismatched.tsv",
        "test-matched": "test_matched.tsv",
        "test-mismatched": "test_mismatched.tsv",
    }
    hub_config = "mnli"
    hub_splits = {
        "train": "train",
        "dev": "validation_matched",
        "dev-matched": "validation_matched",
        "dev-mismatched": "validation_mismatched",
        "test-matched": "test_matched",
        "test-mismatched": "test_mismatched",
    }


class Qnli(GlueTask):
    name = "qnli"
    description = "QNLI: does the sentence answer the question (GLUE)"
    label_names = ["entailment", "not_entailment"]
    fields = {"question": ("question",), "sentence": ("sentence",)}
    hub_config = "qnli"


class Rte(GlueTask):
    name = "rte"
    description = "RTE entailment, GLUE TSV layout (for SuperGLUE's JSONL files use 'superglue-rte')"
    label_names = ["entailment", "not_entailment"]
    fields = {"sentence1": ("sentence1", "premise"), "sentence2": ("sentence2", "hypothesis")}
    hub_config = "rte"


class Wnli(GlueTask):
    name = "wnli"
    description = "WNLI pronoun-resolution entailment (GLUE)"
    label_names = ["not_entailment", "entailment"]
    fields = {"sentence1": ("sentence1",), "sentence2": ("sentence2",)}
    hub_config = "wnli"


TASKS: list[type[Task]] = [Sst2, Cola, Mrpc, Qqp, Stsb, Mnli, Qnli, Rte, Wnli]
