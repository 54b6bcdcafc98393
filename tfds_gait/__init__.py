"""Gait data for GenGait: C3D reader, stride segmentation, abnormality simulator, TFDS builder.

`import tfds_gait` registers the TFDS builder `gait_cycles` (configs `embedded`, `c3d_dir`,
`synthetic`), read with `tfds.data_source(...)` without TensorFlow.
"""

from tfds_gait import gait_cycles  # noqa: F401  (registers the builder)
from tfds_gait.errors import GaitDataError  # noqa: F401
