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


#: Wang, Yan & Oates 2017's FCN, its layers a chain of ``conv_attention_1d``: three Conv-BN-ReLU
#: blocks of 128, 256 and 128 filters (kernels 7, 5, 3 for the paper's 8, 5, 3: the ops have
#: odd kernels), global average pooling, a linear classifier, after the chain's 16-channel stem;
#: Adam at 1e-3 in batches of 16, as the paper trains it.
FCN = {"space": "conv_attention_1d", "stem_channels": 16,
       "layers": [{"op": op, "channels": channels, "stride": 1, "connection": "series"}
                  for op, channels in (("conv_7x7", 128), ("conv_5x5", 256),
                                       ("conv_3x3", 128))],
       "train": {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 16, "optimizer": "adam"}}
