"""The tiny models of ``test_report.py``, which still imports them from here; they live in ``tests/tiny_models.py``."""

from tiny_models import make_teacher, random_tokens  # noqa: F401
