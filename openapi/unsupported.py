"""The refusal of what the generator does not describe: an error that names it, never a guessed document."""


class UnsupportedError(ValueError):
    """protos/ use something this generator does not describe (yet): it says what, rather than
    writing a document that is wrong."""
