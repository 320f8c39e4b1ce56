"""The floor and the ceiling of benchmarks/serve_load.py: the model in this process, without HTTP.

- The floor: one photo at a time, Pillow decode + resize (`runtime.load_pixels`,
  as the service does) and one batch-1 model call, timed photo by photo; the
  median of 50 is what no request can beat.
- The ceiling: photos per second of decode + model with the service's own
  structure (decode threads feeding a bounded queue, model workers taking
  batches from it), at each batch size and worker layout; the best of them is
  what no server on this machine can beat without changing the model.

Both open their ONNX Runtime sessions as the service does (intra-op threads
as set, one inter-op thread) on the same export the server serves.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from catsdogs.runtime import OnnxPredictor, read_export


@dataclasses.dataclass(frozen=True)
class Layout:
    """How the ceiling runs: `workers` model sessions of `threads` intra-op threads each, `decoders` decode threads.

    `decoders` 0 decodes inline: each model worker decodes its own batch before the call, nothing overlaps.
    """

    workers: int
    threads: int
    decoders: int

    @property
    def name(self) -> str:
        decode = f"{self.decoders} decode threads" if self.decoders else "decode inline"
        return f"{self.workers} worker(s) x {self.threads} thread(s), {decode}"


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_layouts(cores: int) -> list[Layout]:
    """One worker with every thread, one single-thread worker per core, and the latter decoding inline."""
    layouts = [Layout(1, cores, cores), Layout(cores, 1, cores), Layout(cores, 1, 0)]
    return list(dict.fromkeys(layouts))


def open_predictor(export_dir: Path, *, threads: int, batch_size: int = 1) -> OnnxPredictor:
    """An `OnnxPredictor` of the export with `threads` intra-op threads and one inter-op thread, as the service has."""
    import onnxruntime

    contents = read_export(export_dir, format_name="onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(contents.export_dir.artifact_path), options, providers=["CPUExecutionProvider"]
    )
    return OnnxPredictor(
        session,
        class_names=contents.class_names,
        image_size=contents.image_size,
        max_pixels=contents.max_pixels,
        min_side=contents.min_side,
        batch_size=batch_size,
        test_time_augmentation=contents.test_time_augmentation,
        verified=contents.verified,
        precision=contents.precision,
    )


def measure_floor(export_dir: Path, photos: Sequence[bytes], *, repeats: int = 50) -> dict:
    """Time decode + resize + one batch-1 call per photo, `repeats` times over the photos; medians in ms.

    The session has every core, as the service's default single worker has.
    """
    predictor = open_predictor(export_dir, threads=usable_cores())
    for data in photos[:3]:
        # Untimed: ONNX Runtime's first calls set up memory arenas the later ones reuse.
        predictor.predict_pixels(predictor.load_image(data)[None])
    totals, decodes, models = [], [], []
    for number in range(repeats):
        data = photos[number % len(photos)]
        started = time.perf_counter()
        pixels = predictor.load_image(data)
        decoded = time.perf_counter()
        predictor.predict_pixels(pixels[None])
        ended = time.perf_counter()
        totals.append(ended - started)
        decodes.append(decoded - started)
        models.append(ended - decoded)
    return {
        "repeats": repeats,
        "precision": predictor.precision,
        "median_ms": round(statistics.median(totals) * 1000, 2),
        "decode_median_ms": round(statistics.median(decodes) * 1000, 2),
        "model_median_ms": round(statistics.median(models) * 1000, 2),
        "min_ms": round(min(totals) * 1000, 2),
        "max_ms": round(max(totals) * 1000, 2),
    }


def measure_throughput(
    export_dir: Path, photos: Sequence[bytes], layout: Layout, batch_size: int, *, seconds: float, warmup_s: float
) -> float:
    """Photos per second of decode + model in `layout` with full batches of `batch_size`, over `seconds`."""
    predictors = [open_predictor(export_dir, threads=layout.threads) for _ in range(layout.workers)]
    stop = threading.Event()
    counter_lock = threading.Lock()
    state = {"next": 0, "done": 0, "counting": False}
    pixels_queue: queue.Queue = queue.Queue(maxsize=max(2 * batch_size * layout.workers, 2))

    def next_photo() -> bytes:
        with counter_lock:
            number = state["next"]
            state["next"] += 1
        return photos[number % len(photos)]

    def decode_forever(predictor: OnnxPredictor) -> None:
        while not stop.is_set():
            pixels = predictor.load_image(next_photo())
            while not stop.is_set():
                try:
                    pixels_queue.put(pixels, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def take_batch(predictor: OnnxPredictor) -> list | None:
        if not layout.decoders:
            return [predictor.load_image(next_photo()) for _ in range(batch_size)]
        batch = []
        while len(batch) < batch_size:
            try:
                batch.append(pixels_queue.get(timeout=0.1))
            except queue.Empty:
                if stop.is_set():
                    return None
        return batch

    def work(predictor: OnnxPredictor) -> None:
        import numpy

        while not stop.is_set():
            batch = take_batch(predictor)
            if batch is None:
                return
            predictor.predict_pixels(numpy.stack(batch))
            with counter_lock:
                if state["counting"]:
                    state["done"] += len(batch)

    threads = [threading.Thread(target=work, args=(predictor,), daemon=True) for predictor in predictors]
    # Decoding needs no session; the first predictor lends its image settings to every decode thread.
    threads += [
        threading.Thread(target=decode_forever, args=(predictors[0],), daemon=True) for _ in range(layout.decoders)
    ]
    for thread in threads:
        thread.start()
    time.sleep(warmup_s)
    with counter_lock:
        state["counting"] = True
    started = time.perf_counter()
    time.sleep(seconds)
    with counter_lock:
        done, state["counting"] = state["done"], False
    elapsed = time.perf_counter() - started
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    return done / elapsed


def measure_ceiling(
    export_dir: Path,
    photos: Sequence[bytes],
    *,
    batch_sizes: Sequence[int],
    layouts: Sequence[Layout],
    seconds: float,
    warmup_s: float,
) -> dict:
    """Photos per second for every layout and batch size, and the best of them (the ceiling)."""
    rows = []
    for layout in layouts:
        for batch_size in batch_sizes:
            photos_per_second = measure_throughput(
                export_dir, photos, layout, batch_size, seconds=seconds, warmup_s=warmup_s
            )
            rows.append(
                {
                    "layout": layout.name,
                    "workers": layout.workers,
                    "threads": layout.threads,
                    "decoders": layout.decoders,
                    "batch_size": batch_size,
                    "photos_per_s": round(photos_per_second, 2),
                }
            )
    best = max(rows, key=lambda row: row["photos_per_s"])
    return {"seconds_each": seconds, "rows": rows, "best": best, "photos_per_s": best["photos_per_s"]}
