"""The paper's published numbers (Zhao et al., AAAI 2020), to print beside a reproduction."""
from vaanet.classes import E6_CLASSES, VE8_CLASSES

# Table 1 (VE-8) and Table 2 (E-6): literature baselines, accuracy in % (citations shortened to fit a column).
BASELINES = {
    "ve8": [("SentiBank (Borth et al. 2013)", 35.5), ("E-MDBM (Pang et al. 2015)", 40.4),
            ("ITE (Xu et al. 2018)", 44.7), ("V.+Au.+At. (Jiang et al. 2014)", 46.1),
            ("CFN (Chen et al. 2016)", 50.4), ("V.+Au.+At.+E-MDBM (Pang et al. 2015)", 51.1),
            ("Kernelized (Zhang and Xu 2018)", 49.7), ("Kernelized+SentiBank (Zhang and Xu 2018)", 52.5)],
    "e6": [("ITE (Xu et al. 2018)", 51.2), ("CFN (Chen et al. 2016)", 51.8),
           ("Kernelized (Zhang and Xu 2018)", 54.4)],
}
VAANET = {"ve8": 54.5, "e6": 55.3}

# Tables 3 and 4: per-class accuracy and "Average" (= overall accuracy) per attention preset.
ABLATION = {
    "ve8": {
        "AT": [11.3, 3.0, 19.1, 46.1, 46.1, 42.4, 74.7, 10.7, 41.4],
        "VS": [45.4, 27.9, 44.8, 59.5, 49.1, 51.0, 65.1, 35.6, 51.7],
        "VS+VCW": [46.2, 25.9, 42.8, 63.2, 50.9, 40.2, 67.5, 45.2, 52.6],
        "VS+VCW+VT": [55.6, 30.8, 37.5, 60.4, 57.7, 50.0, 65.2, 34.6, 53.6],
        "VS+VCW+VT+AT": [48.2, 24.1, 33.3, 55.9, 55.9, 52.5, 77.1, 35.6, 54.5],
    },
    "e6": {
        "AT": [32.4, 14.1, 38.5, 28.1, 63.9, 46.5, 37.2],
        "VS": [59.9, 44.8, 49.7, 46.2, 35.3, 62.5, 50.8],
        "VS+VCW": [58.4, 52.6, 49.2, 46.3, 44.0, 65.1, 53.4],
        "VS+VCW+VT": [57.1, 53.1, 48.0, 57.0, 38.7, 65.0, 54.5],
        "VS+VCW+VT+AT": [55.1, 50.6, 45.7, 53.7, 50.3, 68.9, 55.3],
    },
}
ABLATION_COLUMNS = {"ve8": list(VE8_CLASSES) + ["Accuracy"], "e6": list(E6_CLASSES) + ["Accuracy"]}

# Table 5: accuracy with CE and PCCE.
LOSSES = {("VS+VCW+VT", "ce"): {"ve8": 51.9, "e6": 52.0}, ("VS+VCW+VT", "pcce"): {"ve8": 53.6, "e6": 54.5},
          ("VS+VCW+VT+AT", "ce"): {"ve8": 53.9, "e6": 54.6}, ("VS+VCW+VT+AT", "pcce"): {"ve8": 54.5, "e6": 55.3}}


def ablation_number(dataset: str, preset: str, column: str) -> float | None:
    table = ABLATION.get(dataset, {})
    if preset not in table:
        return None
    return table[preset][ABLATION_COLUMNS[dataset].index(column)] if column in ABLATION_COLUMNS[dataset] else None
