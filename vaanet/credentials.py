"""Credentials given in a tracking URI: taken out of it into the process environment.

Configurations, params, checkpoints and logs hold the URI without user-info; MLflow's client reads the
user and password from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD. This module sits below both
the configuration (:mod:`vaanet.config`) and the tracking (:mod:`vaanet.train.tracking`).
"""
from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit, urlunsplit


def take_credentials(uri: str) -> str:
    """``http://user:pass@host`` -> ``http://host``, the user and password moved to MLflow's own
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD of this process (Ray workers started from it
    inherit them). The URI without user-info is what configs, params, checkpoints and logs hold."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user)
    if password:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return urlunsplit(parts._replace(netloc=host))
