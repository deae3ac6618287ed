"""Region reads of a compressed (or otherwise not memory-mappable) TIFF page, strip by strip or tile by tile,
so a field is never decoded whole: only the segments a region touches are decoded, a few kept for the next
read, and a read that cannot fit the memory budget is refused with a message."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from cellsearch_gui.core.io.images import READ_BUDGET, check_budget


class SegmentedPage:
    """A 2-D (optionally multi-sample) TIFF page read by segments; indexing returns (rows, cols[, samples])
    like the array it stands for. Supports basic slices (with steps) on the first two axes."""

    def __init__(self, page, path: Path, budget: int = READ_BUDGET):
        self._page = page
        self._path = path
        self._budget = budget
        separate, depth, length, width, contig = page.shaped
        if depth != 1:
            raise ValueError("volumetric TIFF pages are not read by segments")
        self._planes = separate
        self._samples = separate * contig
        self._height, self._width = length, width
        if page.is_tiled:
            self._seg_h, self._seg_w = page.tilelength, page.tilewidth
        else:
            self._seg_h, self._seg_w = min(page.rowsperstrip or length, length), width
        self._down = -(-length // self._seg_h)
        self._across = -(-width // self._seg_w)
        if len(page.dataoffsets) < self._planes * self._down * self._across:
            raise ValueError("the page lists fewer strips or tiles than its size needs")
        self.dtype = np.dtype(page.dtype)
        self._segment_bytes = self._seg_h * self._seg_w * (contig or 1) * self.dtype.itemsize
        check_budget(path, f"one {'tile' if page.is_tiled else 'strip'} of the image", self._segment_bytes)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_limit = max(1, min(budget // 4, 256 * 2**20) // max(1, self._segment_bytes))

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._height, self._width) + ((self._samples,) if self._samples > 1 else ())

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _segment(self, index: int) -> np.ndarray:
        """One decoded strip or tile as (rows, cols, samples of its plane), trimmed to the image."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        page = self._page
        handle = page.parent.filehandle
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        if offset and count:
            with handle.lock:
                handle.seek(offset)
                data = handle.read(min(count, self._segment_bytes * 4 + 2**20))
        else:
            data = None
        decoded, where, shape = page.decode(data, index, jpegtables=page.jpegtables)
        if decoded is None:
            decoded = np.zeros(shape, self.dtype)
        tile = np.asarray(decoded).reshape(decoded.shape[-3:])[: self._seg_h, : self._seg_w]
        self._cache[index] = tile
        while len(self._cache) > self._cache_limit:
            self._cache.popitem(last=False)
        return tile

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = (key, slice(None)) if not isinstance(key, tuple) else key[:2]
        y0, y1, ystep = rows.indices(self._height)
        x0, x1, xstep = cols.indices(self._width)
        if ystep < 1 or xstep < 1:
            raise ValueError("only forward slices are supported")
        ys, xs = np.arange(y0, max(y0, y1), ystep), np.arange(x0, max(x0, x1), xstep)
        check_budget(self._path, f"a {len(xs)} x {len(ys)} region", len(ys) * len(xs) * self._samples
                     * self.dtype.itemsize + self._segment_bytes * self._cache_limit)
        out = np.zeros((len(ys), len(xs), self._samples), self.dtype)
        per_plane = self._samples // self._planes
        for row in np.unique(ys // self._seg_h):
            in_rows = (ys // self._seg_h) == row
            local_y = ys[in_rows] - row * self._seg_h
            for col in np.unique(xs // self._seg_w):
                in_cols = (xs // self._seg_w) == col
                local_x = xs[in_cols] - col * self._seg_w
                for plane in range(self._planes):
                    tile = self._segment((plane * self._down + row) * self._across + col)
                    block = tile[np.ix_(local_y, local_x)]
                    rs, cs = np.flatnonzero(in_rows), np.flatnonzero(in_cols)
                    out[rs[0]:rs[-1] + 1, cs[0]:cs[-1] + 1, plane * per_plane:(plane + 1) * per_plane] = block
        return out[:, :, 0] if self._samples == 1 else out
