"""A release is an image and its configuration: one digest for both.

The deploy module labels each container with the digest of everything that
shapes it (image id, environment, the secret values' hashes, port, networks,
confinement) and compares the live container's label with the digest of what
is asked. A changed environment variable, a rotated database password or new
limits are then a new blue/green release like a new image, and nothing changed
is still no change.

Secret values never appear: each is replaced by a salted SHA-256 before the
whole is digested (the salt is the variable's name, so equal passwords under
two names do not give equal hashes). The digest sits in a container label and
in the ledger; whoever can read those could read the container's environment
anyway.
"""

import hashlib
import json

LABEL_CONFIG = "montaiguillon.config"
# Bumped when what goes into the digest changes, so old and new never compare equal by accident.
FINGERPRINT_VERSION = 1


def _secret_hash(name, value):
    return hashlib.sha256(f"{name}\0{value}".encode()).hexdigest()


def config_digest(image_id, env, secret_env, port, networks, confinement_kwargs):
    """``sha256:<hex>`` of the release's whole configuration (secrets hashed first)."""
    secret_env = secret_env or {}
    document = {
        "fingerprint": FINGERPRINT_VERSION,
        "image_id": image_id,
        "env": {key: str(value) for key, value in (env or {}).items() if key not in secret_env},
        "secrets": {key: _secret_hash(key, value) for key, value in secret_env.items()},
        "port": port,
        "networks": list(networks or []),
        "confinement": confinement_kwargs or {},
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def config_changes(live_labels, wanted_digest):
    """Why the live container's configuration differs, or None when it is the one asked for."""
    live = (live_labels or {}).get(LABEL_CONFIG)
    if live == wanted_digest:
        return None
    if not live:
        return "the live container predates configuration tracking; it is redeployed once to record it"
    return "the configuration changed (environment, secrets, port, networks or limits)"
