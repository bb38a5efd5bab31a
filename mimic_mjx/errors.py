"""The project's one exception type for user errors (bad clip, config, flag, checkpoint).

The CLI catches it and prints its message as a single line; everything else is a bug
and keeps its traceback.
"""


class MimicError(Exception):
    """A user-facing error; the message names the file, field or flag at fault."""
