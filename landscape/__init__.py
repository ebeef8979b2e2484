"""landscape: loss-landscape surfaces of PyTorch models (Li et al., NeurIPS 2018), fast, exact and resumable."""

__version__ = "0.1.0"

from .checkpoints import Checkpoint, build_model, load_checkpoint, save_checkpoint
from .data import DataSpec, ImageSet, load_split
from .directions import DirectionSpec, normalize_direction, random_direction, target_direction
from .errors import LandscapeError
from .evaluate import EvalSpec, PointEvaluator, RunOptions
from .grid import Axis, GridSpec
from .models import create_model, list_models, register_model
from .spec import CheckpointSpec, CurvatureMapSpec, SurfaceSpec
from .storage import Surface, read_surface
from .surface import compute_convexity, compute_surface

__all__ = [
    "Axis",
    "Checkpoint",
    "CheckpointSpec",
    "CurvatureMapSpec",
    "DataSpec",
    "DirectionSpec",
    "EvalSpec",
    "GridSpec",
    "ImageSet",
    "LandscapeError",
    "PointEvaluator",
    "RunOptions",
    "Surface",
    "SurfaceSpec",
    "build_model",
    "compute_convexity",
    "compute_surface",
    "create_model",
    "list_models",
    "load_checkpoint",
    "load_split",
    "normalize_direction",
    "random_direction",
    "read_surface",
    "register_model",
    "save_checkpoint",
    "target_direction",
]
