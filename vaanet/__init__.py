"""vaanet: a reproducible harness for VAANet (Zhao et al., AAAI 2020), video emotion recognition.

Pipeline: data -> models -> losses -> train -> tune -> analysis.
"""
__version__ = "0.1.0"
