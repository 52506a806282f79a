"""Training, evaluation and export of the person segmenter (scripts runnable as files)."""
