"""Training, evaluation and prediction on top of the core and the task layer (accelerate-driven)."""
