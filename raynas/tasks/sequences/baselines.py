"""The baselines every sequence benchmark prints beside a search: 1-nearest-neighbour with the
Euclidean distance on the raw (normalised) series, the field's classic floor (Dau et al., "The
UCR time series archive", 2019), measured on the same split as the search.
"""

from __future__ import annotations

import numpy as np

from raynas.data import Dataset


def one_nn_accuracy(data: Dataset) -> float:
    """Test accuracy of 1-NN (Euclidean) over train+val, the inputs the final model trains on.
    Padding (NaN) counts as 0, the training mean: a shorter series is compared with a longer
    one over the longer one's length."""
    reference = np.nan_to_num(np.concatenate([data.x_train, data.x_val])).reshape(
        len(data.x_train) + len(data.x_val), -1).astype(np.float64)
    labels = np.concatenate([data.y_train, data.y_val])
    query = np.nan_to_num(data.x_test).reshape(len(data.x_test), -1).astype(np.float64)
    distances = ((query**2).sum(1)[:, None] - 2 * query @ reference.T
                 + (reference**2).sum(1)[None])
    return float((labels[distances.argmin(1)] == data.y_test).mean())
