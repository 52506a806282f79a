"""How a segmenter is scored: the one library training/ and benchmarks/ both measure with.

- ``pairs``: find a data set's image/mask pairs and select the validation split;
- ``data_options``: the shared ``--data/--val-list/--limit/--checkpoint`` options and the loop that reads them;
- ``metrics``: person IoU, Dice and boundary F at the photo's own resolution;
- ``validation``: predictions through ``segmenter.inference`` (what is served) scored against the truth;
- ``progress``: a dependency-free progress line.

It imports ``segmenter`` and nothing from training/, handler/ or benchmarks/, so either side may use it.
"""

from evaluation.data_options import add_data_options, all_pairs, case_runs, read_pairs
from evaluation.metrics import boundary_f, dice, image_metrics, iou, mean_metrics
from evaluation.pairs import DatasetError, Pair, find_pairs, pairs_of_root, read_name_list
from evaluation.progress import Progress
from evaluation.validation import evaluate_samples, iter_samples, summarize

__all__ = [
    "DatasetError",
    "Pair",
    "Progress",
    "add_data_options",
    "all_pairs",
    "boundary_f",
    "case_runs",
    "dice",
    "evaluate_samples",
    "find_pairs",
    "image_metrics",
    "iou",
    "iter_samples",
    "mean_metrics",
    "pairs_of_root",
    "read_name_list",
    "read_pairs",
    "summarize",
]
