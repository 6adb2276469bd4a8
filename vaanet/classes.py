"""The data sets' emotion classes in label order (VE-8, Ekman-6) and each class's polarity.

A bottom-layer module (it imports nothing): the data (:mod:`vaanet.data.ingest`, :mod:`vaanet.data.synth`), the
configuration and the loss (:mod:`vaanet.losses`, PCCE's polarity) all read these tables.
"""
from __future__ import annotations

# Alphabetical class order of the public reference code (= label index).
VE8_CLASSES = ("Anger", "Anticipation", "Disgust", "Fear", "Joy", "Sadness", "Surprise", "Trust")
E6_CLASSES = ("Anger", "Disgust", "Fear", "Joy", "Sadness", "Surprise")
POSITIVE, NEGATIVE = "positive", "negative"
# Plutchik / Ekman emotions -> polarity, as in the paper (VE-8) and the data set papers (E-6).
POLARITY: dict[str, str] = {
    "Anger": NEGATIVE, "Disgust": NEGATIVE, "Fear": NEGATIVE, "Sadness": NEGATIVE,
    "Anticipation": POSITIVE, "Joy": POSITIVE, "Surprise": POSITIVE, "Trust": POSITIVE,
}
DATASET_CLASSES = {"ve8": VE8_CLASSES, "e6": E6_CLASSES}
