"""Calibration inputs for the int8 network: the network's uint8 inputs for a sample of the pictures
the whitening is learned from (never an evaluation set), made by the service's own preprocessing.

    python -m services.extractor.calibration [--work .cache/whiten-data] [--images 100] --out FILE.npz

Run by scripts/setup.sh before `quantize.py`, which runs in the export environment (onnx and
onnxruntime's quantiser) and reads this file: the inputs are the service's, from the service's code,
at every input size of the EXTRACTOR_* settings. The sample is every k-th of the sorted pictures,
so the same packages give the same file.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from services.common.errors import InvalidArgument
from services.extractor.fit_whitening import select_images
from services.extractor.preprocess import PreprocessConfig, decode_oriented, network_inputs
from services.extractor.settings import ExtractorSettings

log = logging.getLogger("calibration")

DEFAULT_IMAGES = 100


def sample(paths: list[Path], n: int) -> list[Path]:
    """n paths spread evenly over the list (all of them when there are fewer)."""
    if len(paths) <= n:
        return list(paths)
    return [paths[round(i * len(paths) / n)] for i in range(n)]


def network_inputs_of(paths: list[Path], settings: ExtractorSettings) -> list[NDArray[np.uint8]]:
    """Every picture's uint8 HWC inputs at each of the settings' sizes, as the service makes them."""
    config = PreprocessConfig(settings.image_size, settings.resize, settings.max_image_bytes,
                              settings.max_image_pixels)
    sizes = (settings.image_size, *settings.extra_scales)
    inputs: list[NDArray[np.uint8]] = []
    for path in paths:
        try:
            decoded = decode_oriented(path.read_bytes(), config, max(sizes))
        except InvalidArgument as exc:
            log.warning("skipped %s: %s", path, exc.message)
            continue
        inputs += network_inputs(decoded.image, config, sizes)
    return inputs


def write(inputs: list[NDArray[np.uint8]], out: Path) -> None:
    """One array per input (shapes differ), in order: arr_0, arr_1, ..."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, *inputs)
    tmp.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(".cache/whiten-data"),
                        help="where fit_whitening keeps the picture packages")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[calibration] %(message)s")
    paths, _, _ = select_images(args.work)
    inputs = network_inputs_of(sample(paths, args.images), ExtractorSettings())
    write(inputs, args.out)
    print(f"wrote {len(inputs)} calibration inputs to {args.out}")


if __name__ == "__main__":
    main()
