"""Training students: the distillation loss, the teacher-logits cache and the trainer (`distill`).

Everything that turns a network and a dataset into trained weights lives
here; the search and the pipeline call `distill.train_student` with a
`TrainConfig` and never write a training loop of their own.
"""
