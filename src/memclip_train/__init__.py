"""memclip_train: the command-line programs (train, eval, synth, demo) and the data pipelines."""
