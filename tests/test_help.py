"""The help texts a newcomer reads first: no raw reST markup, the configs and presets listed, flags in words."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _help(parser) -> str:
    return parser.format_help()


def test_vaanet_help_has_no_raw_markup_and_train_lists_configs_and_presets():
    from vaanet.cli import build_parser
    from vaanet.models.vaanet import PRESETS

    parser = build_parser()
    top = _help(parser)
    assert "``" not in top and "experiments/" in top
    sub = next(a for a in parser._actions if a.dest == "command").choices
    train = _help(sub["train"])
    assert "``" not in train
    for config in sorted((REPO / "configs").glob("*.yaml")):
        assert f"configs/{config.name}" in train, config.name
    for preset in PRESETS:
        assert preset in train.split("model presets")[1], preset
    assert "Ekman-6" in train and "VideoEmotion-8" in train  # each config with what it is


def test_study_help_says_what_max_failures_does():
    from vaanet.tune.study import study_parser

    text = " ".join(_help(study_parser("demo")).split())
    assert "counted once" not in text and "restarted from its last checkpoint" in text


def test_figure3_help_explains_every_argument_and_the_figure():
    from analysis.figure3 import build_parser

    parser = build_parser()
    text = " ".join(_help(parser).split())
    assert "``" not in text and "Figure 3" in text and "heat map" in text and "temporal attention" in text
    for action in parser._actions:  # every argument, the positional videos included, says what it is
        assert action.help and len(action.help.split()) >= 5, action.dest
    assert "video files" in text and "the figure file to write" in text and ".pdf" in text
    assert "python -m analysis.figure3 \\ --checkpoint runs/" in text  # an example to copy
