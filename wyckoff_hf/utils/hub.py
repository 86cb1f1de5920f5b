"""Checks before a long job that ends with a Hub upload.

Training and dataset preparation upload at the very end; a wrong repo id, a missing token or an unreachable
Hub should fail in the first seconds with one line, not after hours with a transport traceback. Like
``transformers.Trainer`` (which creates its repo when it starts), the check creates the repository, which
proves the id, the endpoint, the token and the write permission at once.
"""

from __future__ import annotations

from huggingface_hub import HfApi, constants
from huggingface_hub.utils import validate_repo_id


class HubRepoError(RuntimeError):
    """The upload target cannot be used; the message is one line naming the repo and the reason."""


def ensure_hub_repo(repo_id: str, repo_type: str = "model", private: bool = False, token: str | None = None) -> str:
    """Create ``repo_id`` (or find it, if it exists) on the Hub; return its full id.

    Raises ``HubRepoError`` when the id is not ``ORG/NAME`` or the Hub refuses or cannot be reached.
    """
    if repo_id.count("/") != 1:
        raise HubRepoError(f"Hub {repo_type} repo id {repo_id!r} must be ORG/NAME")
    try:
        validate_repo_id(repo_id)
    except ValueError as err:
        raise HubRepoError(f"Hub {repo_type} repo id {repo_id!r} is invalid: {str(err).splitlines()[0]}") from None
    try:
        return HfApi(token=token).create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True).repo_id
    except Exception as err:  # transport, HTTP status and offline-mode errors all end the same way: one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise HubRepoError(f"cannot create or access the Hub {repo_type} repo {repo_id!r} at {constants.ENDPOINT} "
                           f"({type(err).__name__}: {reason}); check the id, HF_TOKEN and the network") from None
