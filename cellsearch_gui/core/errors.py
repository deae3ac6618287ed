"""User-facing errors: each carries a message that names the problem and, where useful, the fix."""


class CellSearchError(Exception):
    """Base class for errors that are shown to the user as they are."""


class UnknownModelError(CellSearchError):
    pass


class WeightsMissingError(CellSearchError):
    pass


class ChecksumMismatchError(CellSearchError):
    pass


class OutOfMemoryError(CellSearchError):
    """A model does not fit in the device's memory even at batch size 1."""


class BadImageError(CellSearchError):
    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DatasetError(CellSearchError):
    pass


class FeatureError(CellSearchError):
    pass


class Cancelled(CellSearchError):
    def __init__(self, message: str = "cancelled by the user"):
        super().__init__(message)
