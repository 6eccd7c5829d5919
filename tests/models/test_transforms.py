"""The model input: read-only batches (Arrow's) convert without torch's warning, and the caller's array
is never written."""

import subprocess
import sys
import textwrap

import numpy as np
import torch

from aikd.models.transforms import to_input


def test_read_only_batches_and_labels_convert_without_a_warning():
    # in a fresh process: torch warns about a non-writable array only once per process
    code = textwrap.dedent("""
        import numpy as np
        from aikd.distill.loop import Plan
        from aikd.models.transforms import to_input

        images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
        labels = np.ones(2, dtype=np.float32)
        images.flags.writeable = labels.flags.writeable = False
        to_input(images)
        Plan(1, 1, 0, 0, 1, label_mean=1.0, label_std=2.0).scale(labels)
    """)
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_float_batch_is_normalised_on_a_copy():
    images = np.full((2, 8, 8, 3), 255.0, dtype=np.float32)
    out = to_input(images)
    assert np.all(images == 255.0)  # untouched
    assert torch.allclose(out, torch.ones_like(out)) and out.is_contiguous(memory_format=torch.channels_last)
