"""TorchServe handler, server control and HTTP client for the person segmenter."""
