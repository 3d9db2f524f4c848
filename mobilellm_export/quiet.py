"""Silence the known, harmless noise of third-party libraries on the command line.

torchao logs that optional CUDA kernels failed to load on a CPU machine, torch warns about its
pytree registrations, ExecuTorch's custom ops and serializer emit FutureWarnings and a note about
mutable buffers (the KV cache, which is meant to start undefined), coremltools draws progress
bars and reports that its macOS-only runtime library is missing on Linux. None of it is actionable for
a user; `--debug` keeps all of it.
"""

from __future__ import annotations

import logging
import os
import warnings

_LOGGERS = ("torchao", "torch.utils._pytree", "coremltools", "executorch")


def quiet_third_party() -> None:
    # coremltools and the onnxruntime-genai builder draw tqdm progress bars for every pass.
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Mutation on a buffer in the model is detected")
    # coreai-torch compares versions with the local suffix: "validated with torch<=2.13.0; found 2.13.0+cpu".
    warnings.filterwarnings("ignore", message="coreai-torch has only been validated")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.export|torchao|executorch|coremltools")
