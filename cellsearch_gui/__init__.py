"""CellSearch: classify cells with frozen foundation models and EWC-FAISS."""

__version__ = "0.1.0"
