"""landscape: loss-landscape surfaces of PyTorch models (Li et al., NeurIPS 2018), fast, exact and resumable."""

__version__ = "0.1.0"

from .checkpoints import Checkpoint, build_model, load_checkpoint, save_checkpoint  # noqa: E402
from .data import DataSpec, ImageSet, load_split  # noqa: E402
from .directions import DirectionSpec, normalize_direction, random_direction, target_direction  # noqa: E402
from .errors import LandscapeError  # noqa: E402
from .evaluate import EvalSpec, PointEvaluator, RunOptions  # noqa: E402
from .grid import Axis, GridSpec  # noqa: E402
from .models import create_model, list_models, register_model  # noqa: E402
from .storage import Surface, read_surface  # noqa: E402
from .spec import CheckpointSpec, SurfaceSpec  # noqa: E402
from .surface import compute_surface  # noqa: E402

__all__ = [
    "Axis", "Checkpoint", "CheckpointSpec", "DataSpec", "DirectionSpec", "EvalSpec", "GridSpec", "ImageSet",
    "LandscapeError", "PointEvaluator", "RunOptions", "Surface", "SurfaceSpec", "build_model", "compute_surface",
    "create_model", "list_models", "load_checkpoint", "load_split", "normalize_direction", "random_direction",
    "read_surface", "register_model", "save_checkpoint", "target_direction",
]
