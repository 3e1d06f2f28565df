"""Docstring fragments shared between classes, inserted by substitution."""


class Substitution:
    """Class or function decorator replacing ``{name}`` markers in the docstring.

    Only the named markers are replaced, so other braces in the docstring (set
    notation such as ``{"relu", "tanh"}``) stay as they are.

    Parameters
    ----------
    **fragments : str
        Text for each marker, indented as it should appear in the docstring.
    """

    def __init__(self, **fragments):
        self.fragments = fragments

    def __call__(self, obj):
        doc = obj.__doc__
        for name, text in self.fragments.items():
            marker = "{" + name + "}"
            if marker not in doc:
                raise ValueError(f"{obj.__name__}'s docstring has no {marker} marker.")
            doc = doc.replace(marker, text.strip("\n"))
        obj.__doc__ = doc
        return obj
