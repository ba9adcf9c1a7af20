"""Uploading training pairs to Lamini: inline (``POST /v1/local-data``) or through its Azure blob storage.

Uploads are not idempotent (each may store a dataset): they are retried only where
the server surely did not act (429, a connection that never opened), never blindly
after a 5xx or a dropped reply.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from llmrun.backends.lamini.api import LaminiApi, field
from llmrun.errors import ServiceUnavailableError
from llmrun.training import TrainingExample

__all__ = ["upload_examples"]

logger = logging.getLogger("llmrun.backends.lamini")


def upload_examples(api: LaminiApi, examples: Sequence[TrainingExample]) -> str:
    """Upload ``examples`` as Lamini ``{"input", "output"}`` pairs; return the dataset id.

    ``input`` is the rendered prompt and ``output`` the completion without the
    local separator (Lamini applies its own prompt format).
    """
    pairs = [{"input": e.prompt, "output": e.completion} for e in examples]
    base = field(
        api.call("GET", "/v1/get-upload-base-path"), "upload_base_path", "GET /v1/get-upload-base-path"
    )
    if base == "azure":
        reply = api.call("POST", "/v1/data", {"upload_base_path": base}, idempotent=False)
        dataset_id = field(reply, "dataset_id", "POST /v1/data")
        location = field(reply, "dataset_location", "POST /v1/data")
        _upload_to_blob(api, pairs, location)
        api.call("POST", "/v1/data/num-datapoints", {"num_datapoints": len(pairs), "dataset_id": dataset_id})
    else:
        reply = api.call(
            "POST", "/v1/local-data", {"upload_base_path": base, "data": pairs}, idempotent=False
        )
        dataset_id = field(reply, "dataset_id", "POST /v1/local-data")
    logger.info("Uploaded %d training pairs to Lamini as dataset %s", len(pairs), dataset_id)
    return dataset_id


def _upload_to_blob(api: LaminiApi, pairs: list[dict[str, str]], location: str) -> None:
    """Put the pairs as JSON lines at the signed blob URL Lamini gave (as the client's ``upload_to_blob``).

    The URL carries a signature, so it appears in no log line or error.
    """
    from azure.core.exceptions import AzureError, HttpResponseError
    from azure.storage.blob import BlobClient

    data = "".join(json.dumps(p) + "\n" for p in pairs).encode("utf-8")
    try:
        blob = BlobClient.from_blob_url(blob_url=location)
        if blob.exists():
            logger.info("Lamini already holds this dataset; not uploading it again")
            return
        blob.upload_blob(data)
    except HttpResponseError as exc:
        raise ServiceUnavailableError(
            f"uploading the training data to Lamini's storage failed (HTTP {exc.status_code}, "
            f"{exc.reason or 'no reason given'})",
            exc.status_code,
        ) from None
    except AzureError as exc:
        raise ServiceUnavailableError(
            f"uploading the training data to Lamini's storage failed ({type(exc).__name__})"
        ) from None
