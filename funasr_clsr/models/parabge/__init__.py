"""ParaBGE baseline: Paraformer's speech encoder and a BERT-like text encoder as a dual encoder."""
from funasr_clsr.models.parabge.model import ParaBGE, ParaBGEFormatError  # noqa: F401 (registers "ParaBGE")
