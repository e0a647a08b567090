__version__ = "0.1.0"

# Bumped whenever the layout of an exported model directory changes in a way an
# older loader cannot read; written into config.yaml and checked at load time.
MODEL_FORMAT_VERSION = 1


def check_model_format(version, model_path, error: type[Exception]) -> None:
    """Refuse a model directory written with another model format version (``error`` names the model)."""
    if version is not None and int(version) != MODEL_FORMAT_VERSION:
        raise error(f"model directory {model_path or ''} has format version {version}, "
                    f"this funasr_clsr reads version {MODEL_FORMAT_VERSION}: re-export it with a matching release")
