"""Error types whose message is shown to the user as one line, each mapped to a CLI exit code."""


class NasCliError(Exception):
    """A failure the user can act on; the CLI prints its message without a traceback."""

    exit_code = 1


class UserInputError(NasCliError, ValueError):
    """Bad input: a recipe, a rule, an argument or a subnet config that cannot be used."""

    exit_code = 2


class UserInputTypeError(UserInputError, TypeError):
    """Bad input of the wrong type; also a TypeError, as ModelOpt raises for the same input."""


class UserInputAssertionError(UserInputError, AssertionError):
    """Bad input that ModelOpt refuses with an ``assert`` (a mode that cannot follow the model's
    last one, a state held by a submodule rather than the model given); also an AssertionError,
    so code written for ModelOpt catches it as it did."""


class CheckpointError(UserInputError):
    """A checkpoint that cannot be read, or that does not match the model it is restored into."""


class ApplyModeError(CheckpointError, RuntimeError):
    """A model that is not the one a checkpoint's conversion was made on (another class, another
    ``forward``); also a RuntimeError, as ModelOpt's error of this name is."""


class ConstraintError(NasCliError):
    """The user's constraints cannot be met by any subnet of the search space."""

    exit_code = 3


class StorageError(NasCliError, OSError):
    """A file the storage would not take whole: a full disk, a full quota or a file-size limit.

    Its message names the file being written and what to do (``nascli.atomic.writing``); the
    file's earlier version, if any, is left as it was. A runtime failure, so exit 1. Also an
    OSError with the refusal's ``errno`` and the file as ``filename``, as the failed write of a
    script's own ``torch.save`` (or ModelOpt's ``mto.save``) is, so its ``except OSError`` still catches it.
    """

    def __init__(self, message: str, path: object, errno: int) -> None:
        super().__init__(message)
        self.errno, self.filename = errno, path
        self.path = path

    def __str__(self) -> str:
        return str(self.args[0])  # the line, not OSError's "[Errno 28] ...: 'path'"

    def __reduce__(self) -> tuple:
        """Pickled whole (OSError's own keeps only the message), so it crosses process boundaries."""
        return type(self), (self.args[0], self.path, self.errno)
