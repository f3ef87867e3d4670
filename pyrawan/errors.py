"""Errors that the CLI turns into one clear paragraph and an exit code (no traceback)."""
from __future__ import annotations

import errno
import re


class PyrawanError(Exception):
    """A failure the user can fix. ``exit_code`` 2 = bad usage or invalid input, 1 = failure while running."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(PyrawanError):
    """Invalid input: a bad recipe, argument, shape or file (exit code 2)."""

    exit_code = 2


class RunError(PyrawanError):
    """A failure while running, e.g. an artifact that does not verify (exit code 1)."""

    exit_code = 1


# ---- I/O faults as sentences ---------------------------------------------------------------------

_FULL = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "the file is larger than allowed (file-size "
         "limit)", errno.EDQUOT: "the disk quota is exceeded"}
_DENIED = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted"}
# Rust io::Error kinds as printed inside safetensors' SafetensorError messages.
_RUST_KINDS = {"StorageFull": errno.ENOSPC, "FileTooLarge": errno.EFBIG, "QuotaExceeded": errno.EDQUOT,
               "ReadOnlyFilesystem": errno.EROFS, "PermissionDenied": errno.EACCES}
_RUST_CODE = re.compile(r"(?:code: |os error )(\d+)")  # Debug and Display forms of io::Error


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or during (each once)."""
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _fault(err: BaseException) -> tuple[int, str | None] | None:
    """``(errno, file name)`` of a disk-full or write-permission fault anywhere in ``err``'s chain."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in {**_FULL, **_DENIED}:
            return e.errno, e.filename
        text = str(e)
        if type(e).__name__ == "SafetensorError" or "PytorchStreamWriter" in text or "file write failed" in text:
            code = _RUST_CODE.search(text)
            number = int(code.group(1)) if code else next((n for k, n in _RUST_KINDS.items() if k in text), None)
            if number in _FULL or number in _DENIED:
                return number, None
            if "file write failed" in text or "PytorchStreamWriter" in text:
                return errno.ENOSPC, None
    return None


def io_fault_message(err: BaseException) -> str | None:
    """One paragraph for a write that failed because the disk is full or the folder is read-only; else None."""
    found = _fault(err)
    if found is None:
        return None
    number, filename = found
    where = f" {filename}" if filename else ""
    if number in _FULL:
        return (f"cannot write{where}: {_FULL[number]}. Nothing was published: outputs are written under a "
                f"temporary name and renamed only when complete. Free space (or raise the limit) and run the "
                f"command again, or choose an -o/--out folder on another disk.")
    return (f"cannot write{where}: {_DENIED[number]}. Choose an -o/--out folder you can write to (or fix its "
            f"permissions) and run the command again; nothing was published.")


class NonFiniteError(RunError):
    """Sampling or decoding produced NaN or Inf: nothing of it may be published (exit code 1).

    ``samples`` are positions in the batch that went bad; a caller that knows which prompts the batch
    holds re-raises it with ``for_prompts`` so the message names prompt indices.
    """

    def __init__(self, where: str, samples: list[int], what: str = "the latents"):
        self.where, self.samples, self.what = where, list(samples), what
        shown = ", ".join(map(str, self.samples[:10])) + (", ..." if len(self.samples) > 10 else "")
        super().__init__(f"{what} of prompt index {shown} became non-finite (NaN or Inf) at {where}; nothing of "
                         f"{'it' if len(self.samples) == 1 else 'them'} is published. The model's weights (or its "
                         f"settings: guidance, shift) produce NaN: check it with `pyrawan verify` and the loss of "
                         f"the run that made it, then sample again.")

    def for_prompts(self, indices) -> "NonFiniteError":
        """The same error with batch positions replaced by ``indices[position]`` (prompt indices)."""
        return NonFiniteError(self.where, [int(indices[i]) for i in self.samples], self.what)
