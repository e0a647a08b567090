from funasr_clsr.models.clsr.model import CLSR, ModelFormatError  # noqa: F401
