"""Head kinds: the one fact about a task that the model side needs."""

from enum import StrEnum


class HeadKind(StrEnum):
    """What the model must predict; the core builds one linear head per kind."""

    CLASSIFICATION = "classification"  # one label per input (single text or pair); labels: (B,) long
    REGRESSION = "regression"  # one float per input (STS-B); labels: (B,) float
    # one label per word (NER, SRL); labels: (B, T), -100 ignored
    TOKEN_CLASSIFICATION = "token-classification"
    # start/end token per window; start_positions / end_positions: (B,)
    QUESTION_ANSWERING = "question-answering"
    MULTIPLE_CHOICE = "multiple-choice"  # one score per choice (COPA); input_ids: (B, C, T), labels: (B,)
    CAUSAL_LM = "causal-lm"  # next-token prediction on response tokens; labels: (B, T), -100 ignored
    # encoder-decoder (T5, BART): input_ids feed the encoder; labels (B, T) are the decoder's targets
    SEQ2SEQ_LM = "seq2seq-lm"
