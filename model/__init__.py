"""PyTorch side of Inhibitron: the float64 reference (numpy), the
``InhibitorAttention`` module, model surgery on Hugging Face BERT/DistilBERT
and the distillation recipes.

Submodules are imported on demand so that ``inhibitron.model.reference``
works without PyTorch installed.
"""
