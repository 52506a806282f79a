"""The small core shared by training, the TorchServe handler and the command-line tools.

Everything that decides what a pixel becomes lives here exactly once: the model, the image
decoding rules, the pre-processing constants and the edge-aware upsampling. Training and
serving both import it, so what is measured is what is served.
"""
