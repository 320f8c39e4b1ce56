"""Models are files you can trust: `.keras` only, written atomically with a SHA-256, checked before loading.

Loading uses `safe_mode=True` (no arbitrary code from the file) and first
imports every model family, so their custom layers are registered with Keras.
"""

import os
import tempfile
from pathlib import Path

from catsdogs.fileio import sha256_file, verify_checksum, write_checksum


def save_model(model, path) -> str:
    """Save a model as `.keras` atomically, with its SHA-256 in `<path>.sha256` beside it.

    Args:
        model: the `keras.Model` to save.
        path: destination ending in `.keras`.

    Returns:
        The hex SHA-256 of the saved file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keras insists on the .keras suffix, so the temporary name keeps it.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.keras")
    os.close(descriptor)
    try:
        model.save(temporary, overwrite=True)
        # mkstemp makes the file private (0600); a model is meant to be copied and shared.
        os.chmod(temporary, 0o644)
        digest = sha256_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return write_checksum(path, digest)


def load_model(path, *, verify=True):
    """Load a `.keras` model for inference or further training, with `safe_mode=True`.

    The optimizer is not restored: catsdogs never resumes training from a saved
    model (a resumed run restores its own backup), so nothing needs it.

    Args:
        path: the `.keras` file.
        verify: check it against `<path>.sha256` first. Only checkpoints whose
            hash the run folder has already checked (`RunDir.committed_checkpoint`) pass False.

    Returns:
        The `keras.Model`.

    Raises:
        CatsdogsError: if verification is on and the file or its checksum is missing, or they do not match.
    """
    import keras

    from catsdogs.models import available_models

    if verify:
        verify_checksum(path, what="model")
    available_models()  # Import every model family, so their custom objects are registered.
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def load_committed_checkpoint(run_dir):
    """Load a run folder's committed best checkpoint (hash-checked by the run folder), or return None."""
    committed = run_dir.committed_checkpoint()
    return None if committed is None else load_model(committed[0], verify=False)
