"""PCA whitening of descriptors: learned once at setup (see `fit_whitening.py`), applied to every vector.

    y = l2(P^T (l2(ssqrt(x)) - mean))        ssqrt(x) = sign(x) * |x|^power (signed square root)

P projects onto the top `dim` principal directions, each scaled by 1/sqrt(lambda') where the
eigenvalues are shrunk towards their mean, lambda' = (1 - shrink) * lambda + shrink * mean(lambda):
full whitening (shrink 0) over-weights noisy directions and hurts category search, plain PCA
(shrink 1) leaves the bursty ones dominant (bench/research/RESULTS.md measured 0.5 best).

The learned arrays live in `<name>.npz` next to `<name>.json`, a manifest holding the file's
sha256 and the descriptor pipeline it was learned on; the extractor refuses a file that does not
match either, so a vector is never whitened by a projection learned for other vectors.

The whitening's identity (part of the model id every album records) is a digest of what it was
learned from and how (the manifest less its file fields: the network file's sha256, the source
packages' versions, the pipeline, the parameters), not of its bytes: fits from the same inputs agree
to the last float bit or so, but not necessarily bit for bit (another CPU can take other
instruction paths in onnxruntime and BLAS; two fits here made by different versions of this code
differed by at most 6e-8), and such installs must give albums the same id. Manifests written
before `model_sha256` was recorded keep the file's sha256 as their identity.

`exact_int8` (true since the extractor sums the int8 network's products without saturating on every
CPU, session.EXACT_INT8) is not part of the identity either: a fit on a CPU with VNNI always had
those vectors, while one made without the flag on a CPU without VNNI learned from others, and
`fit_whitening --check` has a whitening without it learned again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.extractor.session import ModelFileError, sha256_of


@dataclass(frozen=True)
class Whitening:
    """A learned projection from the network's descriptor space to `dim` whitened dimensions."""

    mean: NDArray[np.float32]
    projection: NDArray[np.float32]
    power: float = 0.5

    @property
    def input_dim(self) -> int:
        return int(self.projection.shape[0])

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1])

    def apply(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        """[N, input_dim] -> [N, dim] unit vectors."""
        x = _unit(signed_power(vectors.astype(np.float32, copy=False), self.power))
        return _unit((x - self.mean) @ self.projection)

    @classmethod
    def fit(cls, rows: NDArray[np.float32], dim: int, shrink: float = 0.5, power: float = 0.5) -> Whitening:
        """Learns the projection from training rows [M, D] (M > dim, in float64 for stable eigenvectors)."""
        if not 0.0 <= shrink <= 1.0:
            raise ValueError(f"shrink must be in [0, 1], got {shrink}")
        if rows.ndim != 2 or dim > rows.shape[1] or rows.shape[0] <= dim:
            raise ValueError(f"cannot learn {dim} dimensions from rows of shape {rows.shape}")
        x = _unit(signed_power(rows.astype(np.float64), power))
        mean = x.mean(axis=0)
        eigenvalues, eigenvectors = np.linalg.eigh(np.cov((x - mean).T))
        top = np.argsort(-eigenvalues)[:dim]
        lam = np.maximum(eigenvalues[top], 1e-12)
        lam = (1.0 - shrink) * lam + shrink * lam.mean()
        projection = eigenvectors[:, top] / np.sqrt(lam)
        return cls(mean.astype(np.float32), projection.astype(np.float32), power)

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        np.savez(out, mean=self.mean, projection=self.projection, power=np.float32(self.power))
        return out.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> Whitening:
        with np.load(path) as data:
            return cls(data["mean"].astype(np.float32), data["projection"].astype(np.float32), float(data["power"]))


def signed_power(x: NDArray[Any], power: float) -> NDArray[Any]:
    """sign(x) * |x|^power (power-law normalisation; 1 leaves x as it is)."""
    return x if power == 1.0 else np.sign(x) * np.abs(x) ** power


def _unit(x: NDArray[Any]) -> NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def whitening_name(model: str, pipeline: str, dim: int) -> str:
    """The file stem of a whitening learned for a descriptor pipeline, e.g.
    "efficientnet-lite0-gem3-320-aspect-whiten512" for "efficientnet-lite0/gem3/320/aspect"."""
    return f"{model}-{pipeline.removeprefix(model + '/').replace('/', '-')}-whiten{dim}"


def save(whitening: Whitening, directory: Path, name: str, manifest: dict[str, Any]) -> Path:
    """Writes `<name>.npz`, then `<name>.json` with its sha256 (so a manifest always names a whole file)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = whitening.to_bytes()
    npz = directory / f"{name}.npz"
    _write_atomically(npz, data)
    doc = {**manifest, "file": npz.name, "sha256": hashlib.sha256(data).hexdigest(),
           "input_dim": whitening.input_dim, "dim": whitening.dim, "power": whitening.power}
    _write_atomically(directory / f"{name}.json", (json.dumps(doc, indent=2) + "\n").encode())
    return npz


def load_verified(directory: Path, name: str, pipeline: str, model_sha256: str | None = None
                  ) -> tuple[Whitening, str]:
    """The whitening and its identity (a sha256 hex digest, see the module's doc), after checking the
    file against its manifest, the pipeline and, where both name one, the network file it was
    learned with (`model_sha256`): a whitening of another file's vectors would keep the model id
    while the vectors changed."""
    manifest_path = directory / f"{name}.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        expected, learned_for = str(manifest["sha256"]), str(manifest["pipeline"])
    except FileNotFoundError as exc:
        raise ModelFileError(f"whitening manifest {manifest_path} is missing; run scripts/setup.sh "
                             "(or python -m services.extractor.fit_whitening)") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"whitening manifest {manifest_path} is unreadable ({exc})") from exc
    if learned_for != pipeline:
        raise ModelFileError(f"whitening {name} was learned for {learned_for!r}, not {pipeline!r}; refit it")
    learned_with = manifest.get("model_sha256")
    if model_sha256 is not None and learned_with is not None and learned_with != model_sha256:
        raise ModelFileError(f"whitening {name} was learned with the network file {str(learned_with)[:12]}..., "
                             f"not {model_sha256[:12]}...; refit it (scripts/setup.sh)")
    path = directory / str(manifest.get("file", f"{name}.npz"))
    if not path.exists():
        raise ModelFileError(f"whitening file {path} is missing; run scripts/setup.sh")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelFileError(f"whitening file {path} has sha256 {actual[:12]}..., its manifest says "
                             f"{expected[:12]}...; refit it (scripts/setup.sh)")
    return Whitening.from_file(path), identity(manifest)


# Manifest fields that describe the file rather than what it was learned from, and `exact_int8`.
EXACT_INT8_FIELD = "exact_int8"
_FILE_FIELDS = frozenset({"file", "sha256", EXACT_INT8_FIELD})


def identity(manifest: dict[str, Any]) -> str:
    """What a whitening was learned from and how, as a sha256 hex digest; the file's sha256 for a
    manifest that does not name the network file it was learned with."""
    if "model_sha256" not in manifest:
        return str(manifest["sha256"])
    recipe = {k: v for k, v in manifest.items() if k not in _FILE_FIELDS}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
