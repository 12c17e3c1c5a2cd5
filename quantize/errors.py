"""The one error type conversion raises: its message is a single line for the CLI."""


class ConvertError(ValueError):
    """Conversion cannot start or could not finish; nothing usable was left behind."""
