from funasr_clsr.models.clsr import CLSR  # noqa: F401 (registers "CLSR")
