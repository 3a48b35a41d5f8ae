class UserError(Exception):
    """Bad input or setup that the user can fix; the CLI prints the message alone, on one line."""


class exit_on_user_error:
    """Inside nnU-Net's entry points, turn a UserError into one line on stderr and exit code 1 (no traceback)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and issubclass(kind, UserError):
            raise SystemExit(f"nnunet-scnas: error: {error}") from None
        return False
