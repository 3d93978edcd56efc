"""Moved to :mod:`cotscope.analyses.io.atomic`; this old name is the same module object."""

import sys

from cotscope.analyses.io import atomic as _m

sys.modules[__name__] = _m  # noqa: E702,F401
