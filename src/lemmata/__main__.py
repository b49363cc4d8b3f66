"""``python -m lemmata`` is the ``lemmata`` command."""

from lemmata.cli import _script

_script()
