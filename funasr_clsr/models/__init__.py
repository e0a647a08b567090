from funasr_clsr.models.clsr import CLSR  # noqa: F401 (registers "CLSR")
from funasr_clsr.models.parabge import ParaBGE  # noqa: F401,E402 (registers "ParaBGE")
from funasr_clsr.models.clap import CLAPStyle  # noqa: F401,E402 (registers "CLAPStyle", "CLAPAudioEncoder")
from funasr_clsr.models.whisper_encoder import WhisperAudioEncoder  # noqa: F401,E402 (registers "WhisperAudioEncoder")
