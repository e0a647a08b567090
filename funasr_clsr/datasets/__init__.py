from funasr_clsr.datasets.qa_dataset import AudioQADataset, IndexDSJsonlQA  # noqa: F401 (registers)
