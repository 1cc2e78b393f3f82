TASKS: list = []  # filled by the tagging tasks (CoNLL NER, SRL)
