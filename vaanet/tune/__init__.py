"""Studies: Ray Tune fans out one training run (vaanet.train) per grid point x split x seed."""
from .study import Study, run_study, study_parser

__all__ = ["Study", "run_study", "study_parser"]
