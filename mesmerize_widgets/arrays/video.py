"""Lazy grayscale video movies (avi/mp4/mkv/mov, e.g. UCLA Miniscope .avi) via OpenCV.

Container frame counts and seeks are not always exact, so on open the reader
checks both: the last frame must be readable and nothing may follow it (otherwise
frames are counted by decoding), and seeking must land on the same frames as
sequential decoding. If seeking is not frame-exact, random access falls back to
decoding forward from a cached position (restarting from frame 0 when moving
backwards); only in that mode is a capture kept open between reads, until
:meth:`LazyVideo.close`.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from .base import LazyArray, MovieReadError, check_file

__all__ = ["LazyVideo"]

# frames decoded sequentially on open to check that seeking is frame-exact
_PROBE_FRAMES = 24
# read through gaps up to this many frames instead of seeking
_MAX_GAP = 8


def _gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1:
        return frame[..., 0]
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY if frame.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)


class LazyVideo(LazyArray):
    """A video file as a (t, y, x) uint8 grayscale movie with frame-exact random access."""

    def __init__(self, path: str | os.PathLike, verify: bool = True) -> None:
        super().__init__()
        self.path = check_file(path)
        self._cap: cv2.VideoCapture | None = None  # only used in sequential mode
        self._cap_pos = 0
        cap = self._open()
        try:
            self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            ok, frame = cap.read()
            if not ok or frame is None:
                raise MovieReadError(f"{self.path}: video has no decodable frames")
            first = _gray(frame)
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self._shape = (n, *first.shape)
            self._dtype = np.dtype(np.uint8)
            self.seek_exact = True
            if not self._count_ok(cap, n):
                n = self._count_by_decoding()
            self._shape = (n, *first.shape)
            if verify and n > 1:
                self.seek_exact = self._seek_is_exact(cap, n)
        finally:
            cap.release()

    def _describe(self) -> str:
        mode = "seek" if self.seek_exact else "sequential"
        return f"fps={self.fps:g}, access={mode!r}, path={str(self.path)!r}"

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise MovieReadError(
                f"{self.path}: OpenCV cannot open this video (corrupt or unsupported codec)"
            )
        return cap

    @staticmethod
    def _read_at(cap: cv2.VideoCapture, i: int) -> np.ndarray | None:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, frame = cap.read()
        return _gray(frame) if ok and frame is not None else None

    def _count_ok(self, cap: cv2.VideoCapture, n: int) -> bool:
        """Is the container's frame count right: last frame readable, none after it?"""
        if n <= 0:
            return False
        if self._read_at(cap, n - 1) is None:
            return False
        ok, _ = cap.read()
        return not ok

    def _count_by_decoding(self) -> int:
        cap = self._open()
        n = 0
        try:
            while cap.grab():
                n += 1
        finally:
            cap.release()
        if n == 0:
            raise MovieReadError(f"{self.path}: video has no decodable frames")
        return n

    def _seek_is_exact(self, cap: cv2.VideoCapture, n: int) -> bool:
        """Compare seeks with sequential decoding on a prefix and at the end."""
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        k = min(n, _PROBE_FRAMES)
        seq = []
        for _ in range(k):
            ok, frame = cap.read()
            if not ok:
                return False
            seq.append(_gray(frame))
        for i in sorted({k - 1, k // 2, 1}):
            got = self._read_at(cap, i)
            if got is None or not np.array_equal(got, seq[i]):
                return False
        # near the end: a seek must agree with stepping forward from the frame before
        a = self._read_at(cap, n - 2)
        ok, b = cap.read()
        c = self._read_at(cap, n - 1)
        return a is not None and ok and c is not None and np.array_equal(_gray(b), c)

    # -- reading ----------------------------------------------------------------
    def _read_frames(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), *self._shape[1:]), dtype=np.uint8)
        if not self.seek_exact:
            self._read_sequential(indices, out)
            return out
        cap = self._open()
        try:
            pos = -1
            for j, i in enumerate(indices):
                i = int(i)
                if pos < 0 or not (pos <= i <= pos + _MAX_GAP):
                    cap.set(cv2.CAP_PROP_POS_FRAMES, i)
                    pos = i
                while pos < i:  # read through a small gap
                    if not cap.grab():
                        raise MovieReadError(f"{self.path}: could not decode frame {pos}")
                    pos += 1
                ok, frame = cap.read()
                if not ok or frame is None:
                    raise MovieReadError(f"{self.path}: could not decode frame {i}")
                out[j] = _gray(frame)
                pos = i + 1
        finally:
            cap.release()
        return out

    def _read_sequential(self, indices: np.ndarray, out: np.ndarray) -> None:
        for j, i in enumerate(indices):
            i = int(i)
            if self._cap is None or self._cap_pos > i:
                self.close()
                self._cap = self._open()
                self._cap_pos = 0
            while self._cap_pos < i:
                if not self._cap.grab():
                    raise MovieReadError(f"{self.path}: could not decode frame {self._cap_pos}")
                self._cap_pos += 1
            ok, frame = self._cap.read()
            if not ok or frame is None:
                raise MovieReadError(f"{self.path}: could not decode frame {i}")
            out[j] = _gray(frame)
            self._cap_pos = i + 1

    def close(self) -> None:
        """Release the capture held in sequential-access mode."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
            self._cap_pos = 0

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
