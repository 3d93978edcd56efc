"""One base class for every cotscope error: ``except cotscope.CotscopeError`` catches them all.

It subclasses ``ValueError`` so code written against earlier releases (which raised ``ValueError``
subclasses) keeps working.

>>> issubclass(CotscopeError, ValueError)
True
"""


class CotscopeError(ValueError):
    """Bad input or state that cotscope detected; the message names the problem and the fix."""
