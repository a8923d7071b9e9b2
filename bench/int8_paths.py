"""The int8 network's two integer paths on this CPU, against the fp32 network on the same photos.

    .venv/bin/python bench/int8_paths.py [--images 60] [--set .cache/evalset]

onnxruntime's default U8S8 path may saturate on an x86-64 CPU without AVX-512 VNNI; the
high-precision one (`session.x64quantprecision`, which the extractor asks for on such CPUs:
services/extractor/session.py) sums exactly. For each photo at the service's input size, each
session's GeM descriptor (the network's output pooled, before whitening) and its time for one run
on one thread. Prints the cosine of each int8 path's descriptors to fp32's (mean, min) and each
path's milliseconds an image beside fp32's, measured in turn on the same pixels. Where the default
path does not saturate (VNNI), both int8 paths give the same descriptors.
The last line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import gallery_files, print_json_line
from services.extractor.pooling import embed_fmap
from services.extractor.preprocess import PreprocessConfig, decode_image
from services.extractor.session import CPU_PROVIDER, EXACT_INT8, cpu_flags, network_name, saturates_int8
from services.extractor.settings import ExtractorSettings, Precision


def session(path: Path, exact: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if exact:
        options.add_session_config_entry(*EXACT_INT8)
    return ort.InferenceSession(str(path), options, providers=[CPU_PROVIDER])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--set", type=Path, default=Path(".cache/evalset"), help="evaluation set (gallery photos)")
    args = parser.parse_args()
    settings = ExtractorSettings()
    config = PreprocessConfig(image_size=settings.image_size, resize=settings.resize)
    int8 = settings.model_dir / f"{network_name(settings.model_name, Precision.INT8)}.onnx"
    sessions = {"fp32": session(settings.model_dir / f"{network_name(settings.model_name, Precision.FP32)}.onnx",
                                False),
                "int8_default": session(int8, False), "int8_exact": session(int8, True)}
    inputs = [decode_image(p.read_bytes(), config)[None] for p in gallery_files(args.set, args.images)]
    for s in sessions.values():  # warm-up: first-run allocations stay out of the timings
        s.run(["fmap"], {"images": inputs[0]})
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in sessions}
    seconds = dict.fromkeys(sessions, 0.0)
    for pixels in inputs:
        for name, s in sessions.items():  # in turn on each photo, so that the machine's drift meets all alike
            started = time.perf_counter()
            fmap = s.run(["fmap"], {"images": pixels})[0]
            seconds[name] += time.perf_counter() - started
            vectors[name].append(embed_fmap(np.asarray(fmap), settings.gem_p)[0])
    ms = {name: round(1000 * t / len(inputs), 1) for name, t in seconds.items()}
    figures: dict[str, object] = {"bench": "int8_paths", "images": len(inputs), "ms_per_image": ms,
                                  "saturating_cpu": saturates_int8(cpu_flags())}
    print(f"{len(inputs)} photos at {settings.image_size} px, one thread; this CPU "
          f"{'may saturate' if figures['saturating_cpu'] else 'has AVX-512 VNNI'} on the default path")
    print(f"  fp32           {ms['fp32']:6.1f} ms an image")
    for name in ("int8_default", "int8_exact"):
        cosines = [float(a @ b) for a, b in zip(vectors["fp32"], vectors[name], strict=True)]
        figures[f"{name}_cosine_to_fp32"] = {"mean": round(float(np.mean(cosines)), 4),
                                             "min": round(min(cosines), 4)}
        print(f"  {name:<14} {ms[name]:6.1f} ms an image ({ms[name] / ms['fp32']:.2f}x fp32), cosine to fp32 "
              f"mean {np.mean(cosines):.4f}, min {min(cosines):.4f}")
    same = [float(a @ b) for a, b in zip(vectors["int8_default"], vectors["int8_exact"], strict=True)]
    figures["int8_default_cosine_to_exact"] = round(float(np.mean(same)), 4)
    print(f"  default vs exact int8: cosine mean {np.mean(same):.4f}")
    print_json_line(figures)


if __name__ == "__main__":
    main()
