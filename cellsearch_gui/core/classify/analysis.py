"""How models see a labelled library: class separation per model and representational similarity between
models (the paper's analysis of its foundation models).

* Class separation: features reduced by PCA to min(100, n-1, dim) dimensions, then the mean cosine
  similarity over all pairs of cells of the same class (intra) and of different classes (inter).
* Model similarity: CKA (centred kernel alignment, Kornblith et al. 2019) with an RBF kernel whose
  bandwidth is a fraction of the median pairwise distance, sigma^2 = frac^2 * median(squared distances),
  as in the reference implementation (the median is taken over the whole distance matrix).
"""

from __future__ import annotations

import numpy as np


def pca_reduce(x: np.ndarray, max_dims: int = 100) -> np.ndarray:
    """Centre and project onto the leading min(max_dims, n-1, dim) principal components (float64)."""
    x = np.asarray(x, np.float64)
    n, dim = x.shape
    k = max(1, min(max_dims, n - 1, dim))
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:k].T


def class_similarity(x: np.ndarray, labels, max_dims: int = 100) -> dict:
    """Mean cosine similarity of same-class and of different-class pairs after PCA."""
    labels = np.asarray(labels)
    z = pca_reduce(x, max_dims)
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    sim = z @ z.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    intra = sim[same & off_diagonal]
    inter = sim[~same]
    result = {
        "pca_dims": int(z.shape[1]),
        "intra": float(intra.mean()) if intra.size else float("nan"),
        "inter": float(inter.mean()) if inter.size else float("nan"),
    }
    result["gap"] = result["intra"] - result["inter"]
    return result


def gram_linear(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x @ x.T


def gram_rbf(x: np.ndarray, sigma_frac: float = 0.8) -> np.ndarray:
    """RBF kernel exp(-d^2 / (2 sigma^2)) with sigma = sigma_frac * median pairwise distance."""
    x = np.asarray(x, np.float64)
    sq_norms = np.einsum("ij,ij->i", x, x)
    sq_dist = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(sq_dist, 0.0)
    median = np.median(sq_dist)
    if median <= 0:
        return np.ones_like(sq_dist)  # all points identical
    return np.exp(-sq_dist / (2.0 * sigma_frac**2 * median))


def centre_gram(gram: np.ndarray) -> np.ndarray:
    """H K H with H = I - 11^T / n."""
    gram = np.asarray(gram, np.float64)
    return gram - gram.mean(axis=0, keepdims=True) - gram.mean(axis=1, keepdims=True) + gram.mean()


def cka(gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    """CKA = <HKH, HLH>_F / (||HKH||_F ||HLH||_F); 0 when either kernel is constant."""
    kx, ky = centre_gram(gram_x), centre_gram(gram_y)
    denom = np.linalg.norm(kx) * np.linalg.norm(ky)
    return float(np.sum(kx * ky) / denom) if denom > 0 else 0.0


def cka_matrix(features: dict[str, np.ndarray], sigma_frac: float = 0.8) -> np.ndarray:
    """RBF CKA between every pair of models (symmetric, ones on the diagonal)."""
    grams = [gram_rbf(f, sigma_frac) for f in features.values()]
    n = len(grams)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = cka(grams[i], grams[j])
    return out


def stratified_sample(labels, max_cells: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_cells`` cells, the same fraction of each class (all when fewer)."""
    labels = np.asarray(labels)
    if len(labels) <= max_cells:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    fraction = max_cells / len(labels)
    for cls in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == cls)
        keep.extend(rng.choice(idx, size=max(1, int(round(fraction * len(idx)))), replace=False))
    keep = np.array(keep)
    if len(keep) > max_cells:  # rounding up small classes can overshoot by a few cells
        keep = rng.choice(keep, size=max_cells, replace=False)
    return np.sort(keep)


def analyse(per_model: dict[str, np.ndarray], labels, pca_dims: int = 100, sigma_frac: float = 0.8) -> dict:
    """Class separation per model and the RBF-CKA matrix between models, as a JSON-ready dict."""
    models = list(per_model)
    return {
        "n_cells": int(len(labels)),
        "classes": sorted(set(labels)),
        "pca_dims_max": pca_dims,
        "sigma_frac": sigma_frac,
        "models": models,
        "dims": {m: int(per_model[m].shape[1]) for m in models},
        "class_similarity": {m: class_similarity(per_model[m], labels, pca_dims) for m in models},
        "cka_rbf": cka_matrix(per_model, sigma_frac).tolist(),
    }


def format_table(result: dict) -> str:
    models = result["models"]
    width = max(12, *(len(m) for m in models)) + 2
    lines = [f"{'model':<{width}}{'dim':>6}{'PCA':>5}{'intra cos':>11}{'inter cos':>11}{'gap':>8}"]
    for m in models:
        s = result["class_similarity"][m]
        lines.append(f"{m:<{width}}{result['dims'][m]:>6}{s['pca_dims']:>5}{s['intra']:>11.3f}{s['inter']:>11.3f}"
                     f"{s['gap']:>8.3f}")
    lines.append("")
    lines.append(f"RBF CKA (sigma = {result['sigma_frac']} x median distance)")
    short = [m[:10] for m in models]
    lines.append(" " * width + "".join(f"{s:>11}" for s in short))
    for m, row in zip(models, result["cka_rbf"]):
        lines.append(f"{m:<{width}}" + "".join(f"{v:>11.3f}" for v in row))
    return "\n".join(lines)


def _colour(value: float) -> tuple[int, int, int]:
    """Viridis-like colour (RGB) for a value in [0, 1]."""
    import cv2

    level = np.uint8(round(255 * min(max(value, 0.0), 1.0)))
    b, g, r = cv2.applyColorMap(np.array([[level]], np.uint8), cv2.COLORMAP_VIRIDIS)[0, 0]
    return int(r), int(g), int(b)


def render_png(result: dict, path) -> None:
    """CKA heatmap (left) and intra/inter-class cosine bars per model (right), drawn with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    models = result["models"]
    n = len(models)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    cell, label_w, top = 64, 170, 60
    heat_w = label_w + n * cell + 40
    bar_w = 140 + 90 * n
    height = max(top + n * cell + 130, 420)
    image = Image.new("RGB", (heat_w + bar_w, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), f"RBF CKA between models (sigma = {result['sigma_frac']} x median distance, "
                        f"{result['n_cells']} cells)", fill="black", font=font)
    for i, m in enumerate(models):
        draw.text((10, top + i * cell + cell // 2 - 7), m, fill="black", font=font)
        draw.text((label_w + i * cell + 4, top + n * cell + 6 + 16 * (i % 2)), m[:9], fill="black", font=font)
        for j in range(n):
            value = result["cka_rbf"][i][j]
            x0, y0 = label_w + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 2, y0 + cell - 2], fill=_colour(value))
            draw.text((x0 + 12, y0 + cell // 2 - 7), f"{value:.2f}", font=font,
                      fill="black" if value > 0.6 else "white")
    # bars: intra (dark) and inter (light) mean cosine similarity per model, axis from -0.2 to 1
    x_axis, y_base, y_top = heat_w + 60, height - 80, top
    lo, hi = -0.2, 1.0

    def y_of(v: float) -> float:
        return y_base - (min(max(v, lo), hi) - lo) / (hi - lo) * (y_base - y_top)

    draw.text((heat_w, 10), f"cosine similarity after PCA ({result['pca_dims_max']} dims max)", fill="black", font=font)
    for v in (-0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        draw.line([x_axis, y_of(v), x_axis + 90 * n, y_of(v)], fill=(225, 225, 225))
        draw.text((x_axis - 45, y_of(v) - 7), f"{v:.1f}", fill="black", font=font)
    for i, m in enumerate(models):
        stats = result["class_similarity"][m]
        for k, (key, colour) in enumerate((("intra", (33, 102, 172)), ("inter", (146, 197, 222)))):
            x0 = x_axis + 10 + i * 90 + k * 34
            draw.rectangle([x0, min(y_of(stats[key]), y_of(0)), x0 + 30, max(y_of(stats[key]), y_of(0))],
                           fill=colour)
        draw.text((x_axis + 8 + i * 90, y_base + 8 + 16 * (i % 2)), m[:11], fill="black", font=font)
    draw.rectangle([x_axis, height - 30, x_axis + 12, height - 18], fill=(33, 102, 172))
    draw.text((x_axis + 18, height - 32), "intra-class", fill="black", font=font)
    draw.rectangle([x_axis + 120, height - 30, x_axis + 132, height - 18], fill=(146, 197, 222))
    draw.text((x_axis + 138, height - 32), "inter-class", fill="black", font=font)
    image.save(path)
