"""The built-in layer kinds; importing this package registers them."""
from . import activation, conv, dense, join, norm, pool, recurrent  # noqa: F401
