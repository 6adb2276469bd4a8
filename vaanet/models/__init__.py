"""Models: Hara 3D ResNet, audio ResNet-18, the attention sub-networks and VAANet itself."""
from .audio import AudioResNet18
from .complexity import Complexity, count_complexity
from .pretrained import PIXEL_NORMALIZATIONS, CheckpointError, load_audio_pretrained, load_visual_pretrained
from .resnet3d import DEPTHS, ResNet3D, resnet3d
from .vaanet import PRESETS, ModelConfig, VAANet, VAANetOutput, build_model, feature_size, vaanet

__all__ = [
    "AudioResNet18", "Complexity", "count_complexity", "PIXEL_NORMALIZATIONS", "CheckpointError",
    "load_audio_pretrained", "load_visual_pretrained", "DEPTHS", "ResNet3D", "resnet3d", "PRESETS",
    "ModelConfig", "VAANet", "VAANetOutput", "build_model", "feature_size", "vaanet",
]
