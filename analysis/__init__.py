"""Analysis: MLflow runs -> tidy DataFrame -> the paper's Tables 1-5 (LaTeX, Markdown) and figures."""
