__version__ = "0.1.0"

# Bumped whenever the layout of an exported model directory changes in a way an
# older loader cannot read; written into config.yaml and checked at load time.
MODEL_FORMAT_VERSION = 1
