"""Studies: Ray Tune fans out one training run (vaanet.train) per grid point x split x seed."""
from .study import Study, main, run_study, study_parser

__all__ = ["Study", "main", "run_study", "study_parser"]
