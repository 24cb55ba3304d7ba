"""The one error type for bad configuration: it names where, what and the fix."""


class ConfigError(ValueError):
    """A config value that cannot run, with the file, the field, the value and the fix."""

    def __init__(self, source: str, field: str, value, fix: str):
        self.source, self.field, self.value, self.fix = source, field, value, fix
        super().__init__(f"{source}: {field} = {value!r} — {fix}")

    def __reduce__(self):
        """Survive pickling (process pools, Ray tasks) with every part intact."""
        return type(self), (self.source, self.field, self.value, self.fix)
