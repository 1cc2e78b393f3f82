TASKS: list = []  # filled by the SQuAD tasks
