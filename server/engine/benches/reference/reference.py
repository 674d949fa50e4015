#!/usr/bin/env python3
"""Run reference matting/inpainting implementations on bench cases.

Usage: python reference.py CASE_DIR

The Rust bench writes CASE_DIR/cases.json plus the input PNGs, runs this
script, then reads the outputs back and computes every quality metric itself.
This side therefore only runs the references, saves their outputs losslessly
and records timings in CASE_DIR/reference.json.
"""

import json
import os
import platform
import sys
import time

# numba picks libgomp for its parallel kernels when the system has it, and
# libgomp's default busy-wait barriers stall badly whenever the cores are
# shared (foreground estimation measured 20x slower on a busy 2-core box;
# with sleeping waits it was no slower than single-threaded). libgomp reads
# this once, when loaded, which happens during the imports below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402


def fail(msg):
    sys.exit(f"reference.py: error: {msg}")


def read_png(case_dir, name, channels):
    """Read an 8-bit PNG with exactly `channels` channels (1 or 3).

    IMREAD_UNCHANGED so nothing is silently converted (16-bit, alpha, gray to
    colour, EXIF rotation): a mismatch means the bench wrote something other
    than what it measures against, so refuse it. Colour comes back BGR.
    """
    path = os.path.join(case_dir, name)
    if not os.path.isfile(path):
        fail(f"missing input file {path}")
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        fail(f"cannot decode {path} (corrupt or not an image)")
    got = 1 if img.ndim == 2 else img.shape[2]
    if img.dtype != np.uint8 or got != channels:
        fail(f"{path}: expected 8-bit, {channels} channel(s); "
             f"got {img.dtype}, {got} channel(s)")
    return img


def write_png(case_dir, name, img):
    path = os.path.join(case_dir, name)
    if not cv2.imwrite(path, img):
        fail(f"cannot write {path}")


def same_size(a, b, what):
    if a.shape[:2] != b.shape[:2]:
        fail(f"{what}: size {b.shape[1]}x{b.shape[0]} does not match image "
             f"{a.shape[1]}x{a.shape[0]}")


def to_pymatting_trimap(trimap_u8):
    # pymatting treats <= 0.1 as background and >= 0.9 as foreground, so
    # e.g. 20 or 240 would become "known"; the bench contract is that only
    # exactly 0 and 255 are known, hence the explicit three-level remap.
    tri = np.full(trimap_u8.shape, 0.5)
    tri[trimap_u8 == 0] = 0.0
    tri[trimap_u8 == 255] = 1.0
    return tri


def estimate_alpha(pymatting, image, trimap):
    # With nothing unknown pymatting's CG solve gets a zero right-hand side,
    # divides 0/0 and "does not converge"; the exact answer is the trimap.
    # (A trimap lacking definite foreground or background is rejected by
    # pymatting itself with a ValueError, reported per case by main().)
    if not (trimap == 0.5).any():
        return trimap.copy()
    return pymatting.estimate_alpha_cf(image, trimap)


def warm_up():
    """Import pymatting and run every reference once on a tiny input.

    pymatting's kernels are numba functions with explicit signatures, so they
    are compiled (or loaded from numba's on-disk cache) at import time, and
    the first call still pays one-off costs such as starting numba's thread
    pool. None of that belongs in the per-case timings.
    """
    start = time.perf_counter()
    import pymatting

    yy, xx = np.mgrid[:40, :40]
    disk = np.hypot(yy - 20, xx - 20)
    image = np.dstack([np.clip((14 - disk) / 4, 0, 1)] * 3) * 0.8 + 0.1
    trimap = np.where(disk < 10, 1.0, np.where(disk > 18, 0.0, 0.5))
    alpha = estimate_alpha(pymatting, image, trimap)
    pymatting.estimate_foreground_ml(image, alpha)

    img = (image * 255).astype(np.uint8)
    mask = (trimap == 0.5).astype(np.uint8) * 255
    cv2.inpaint(img, mask, 3, cv2.INPAINT_TELEA)
    cv2.inpaint(img, mask, 3, cv2.INPAINT_NS)
    return pymatting, time.perf_counter() - start


def load_matting(case_dir, case):
    bgr = read_png(case_dir, case["image"], 3)
    trimap = read_png(case_dir, case["trimap"], 1)
    same_size(bgr, trimap, case["trimap"])
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float64) / 255.0
    return image, to_pymatting_trimap(trimap)


def load_removal(case_dir, case):
    # Kept in OpenCV's BGR order throughout: imread/imwrite swap symmetrically,
    # so the written file has the same channel order as the input.
    bgr = read_png(case_dir, case["image"], 3)
    mask = read_png(case_dir, case["mask"], 1)
    same_size(bgr, mask, case["mask"])
    return bgr, np.where(mask != 0, 255, 0).astype(np.uint8)


def run_matting(pymatting, case_dir, name, image, trimap):
    start = time.perf_counter()
    alpha = estimate_alpha(pymatting, image, trimap)
    alpha_seconds = time.perf_counter() - start

    start = time.perf_counter()
    fg = pymatting.estimate_foreground_ml(image, alpha)
    fg_seconds = time.perf_counter() - start

    # 16-bit so the Rust side's error metrics are not dominated by 8-bit
    # quantisation of the reference.
    alpha16 = np.rint(np.clip(alpha, 0, 1) * 65535).astype(np.uint16)
    write_png(case_dir, f"{name}.pymatting-alpha.png", alpha16)
    fg8 = np.rint(np.clip(fg, 0, 1) * 255).astype(np.uint8)
    write_png(case_dir, f"{name}.pymatting-fg.png",
              cv2.cvtColor(fg8, cv2.COLOR_RGB2BGR))
    return {"alpha_seconds": alpha_seconds, "foreground_seconds": fg_seconds}


def run_removal(case_dir, name, bgr, mask):
    timings = {}
    for suffix, flag in (("telea", cv2.INPAINT_TELEA), ("ns", cv2.INPAINT_NS)):
        start = time.perf_counter()
        out = cv2.inpaint(bgr, mask, 3, flag)
        timings[f"{suffix}_seconds"] = time.perf_counter() - start
        write_png(case_dir, f"{name}.{suffix}.png", out)
    return timings


def main():
    if len(sys.argv) != 2:
        fail("usage: python reference.py CASE_DIR")
    case_dir = sys.argv[1]
    # Never leave a previous run's report behind for the bench to pick up.
    report_path = os.path.join(case_dir, "reference.json")
    if os.path.exists(report_path):
        os.remove(report_path)

    try:
        with open(os.path.join(case_dir, "cases.json")) as f:
            cases = json.load(f)
        matting = cases.get("matting", [])
        removal = cases.get("removal", [])
    except (OSError, ValueError, AttributeError) as e:
        fail(f"cannot read {case_dir}/cases.json: {e}")

    # Load every input before the warm-up (up to a minute on a cold numba
    # cache) so bad inputs fail fast and leave no partial outputs.
    try:
        matting = [(c["name"], load_matting(case_dir, c)) for c in matting]
        removal = [(c["name"], load_removal(case_dir, c)) for c in removal]
    except (KeyError, TypeError) as e:
        fail(f"malformed case entry in cases.json: {e!r}")

    pymatting, warmup_seconds = warm_up()

    results = {"matting": {}, "removal": {}}
    for name, inputs in matting:
        try:
            results["matting"][name] = run_matting(
                pymatting, case_dir, name, *inputs)
        except ValueError as e:
            fail(f"matting case {name}: pymatting failed: {e}")
    for name, inputs in removal:
        results["removal"][name] = run_removal(case_dir, name, *inputs)

    report = {
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "pymatting": pymatting.__version__,
            "numba": numba.__version__,
        },
        # Effective pool sizes (set via NUMBA_NUM_THREADS and
        # OPENCV_FOR_THREADS_NUM) plus the numba backend actually chosen,
        # which is only known after a parallel kernel (the warm-up) ran.
        # In practice every reference here runs on about one core (CPU time
        # ~= wall time): only pymatting's pyramid resizing is parallel.
        "threads": {
            "numba": numba.get_num_threads(),
            "numba_layer": numba.threading_layer(),
            "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
            "opencv": cv2.getNumThreads(),
        },
        "warmup_seconds": warmup_seconds,
        **results,
    }
    with open(report_path, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
