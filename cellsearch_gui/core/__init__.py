"""Qt-free core: data, models, embedding, the EWC-FAISS classifier and evaluation."""
