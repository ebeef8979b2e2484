"""fp32 means fp32: on CUDA, TF32 is off within the fp32 context and restored after (checked without a GPU)."""

import pytest
import torch

from landscape.hardware import autocast


@pytest.mark.parametrize("before", [True, False])
def test_fp32_on_cuda_turns_tf32_off_within_and_restores_it(before: bool) -> None:
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = before
        with autocast("fp32", torch.device("cuda")):
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 is before
        assert torch.backends.cuda.matmul.allow_tf32 is before
        with pytest.raises(RuntimeError), autocast("fp32", torch.device("cuda")):
            raise RuntimeError("restored on errors too")
        assert torch.backends.cudnn.allow_tf32 is before
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_fp32_on_the_cpu_touches_no_setting() -> None:
    saved = torch.backends.cudnn.allow_tf32
    with autocast("fp32", torch.device("cpu")):
        assert torch.backends.cudnn.allow_tf32 is saved
