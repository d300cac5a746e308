"""Error types whose message is shown to the user as one line, each mapped to a CLI exit code."""


class NasCliError(Exception):
    """A failure the user can act on; the CLI prints its message without a traceback."""

    exit_code = 1


class UserInputError(NasCliError, ValueError):
    """Bad input: a recipe, a rule, an argument or a subnet config that cannot be used."""

    exit_code = 2


class UserInputTypeError(UserInputError, TypeError):
    """Bad input of the wrong type; also a TypeError, as ModelOpt raises for the same input."""


class CheckpointError(UserInputError):
    """A checkpoint that cannot be read, or that does not match the model it is restored into."""


class ConstraintError(NasCliError):
    """The user's constraints cannot be met by any subnet of the search space."""

    exit_code = 3
