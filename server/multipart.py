"""The files of a multipart/form-data body, in the order they were sent.

Werkzeug's `request.files` groups uploads by field name, so `a, b, a` would come back as
`a, a, b` and the predictions would not line up with the files. Its sans-IO decoder gives
the parts in body order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from werkzeug.sansio.multipart import Data, Epilogue, File, MultipartDecoder, NeedData

from server.errors import InputError


@dataclass
class Upload:
    field: str
    filename: str
    data: bytearray = field(default_factory=bytearray)


def uploads(body: bytes, boundary: str | None) -> list[Upload]:
    """Every file part of `body` (plain form fields are skipped), or InputError for a broken body."""
    if not boundary:
        raise InputError("multipart/form-data without a boundary parameter")
    decoder = MultipartDecoder(boundary.encode("latin-1"))  # the body size is already capped
    decoder.receive_data(body)
    decoder.receive_data(None)
    found: list[Upload] = []
    current: Upload | None = None
    try:
        event = decoder.next_event()
        while not isinstance(event, Epilogue | NeedData):
            if isinstance(event, File):
                current = Upload(event.name, event.filename)
                found.append(current)
            elif isinstance(event, Data):
                if current is not None:
                    current.data += event.data
                if not event.more_data:
                    current = None
            else:  # a plain form field
                current = None
            event = decoder.next_event()
    except ValueError as error:
        raise InputError(f"malformed multipart body ({error})") from None
    if isinstance(event, NeedData):
        raise InputError("truncated multipart body (no closing boundary)")
    return found
