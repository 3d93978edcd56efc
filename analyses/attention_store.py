"""Moved to :mod:`cotscope.analyses.io.attention_runs`; this old name is the same module object."""

import sys

from cotscope.analyses.io import attention_runs as _m

sys.modules[__name__] = _m  # noqa: E702,F401
