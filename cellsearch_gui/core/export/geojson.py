"""QuPath: one GeoJSON FeatureCollection per field, ``OUT/<sample>/<field name>.geojson``, each cell a
detection Feature whose Polygon outlines its mask in the field's pixel coordinates (a tiled, stitched field
too: the masks are in source pixels) with a ``classification`` {name, color} QuPath reads."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from cellsearch_gui.core.export.outlines import UNCLASSIFIED_COLOUR, class_colours, outline_rings
from cellsearch_gui.core.export.table import CellRow, ExportSummary, ExportTable, check_writable
from cellsearch_gui.core.io.atomic import disk_errors
from cellsearch_gui.core.io.safe_paths import SafeWriter

CELL_NAMESPACE = uuid.UUID("6f1f4d1e-2a3b-4c5d-9e8f-20b1c3d4e5f6")  # stable feature ids from cell ids


def rows_by_field(table: ExportTable) -> dict[tuple[str, str], list[CellRow]]:
    """{(sample, field path): rows} for the cells cut from a field (with a mask), in table order."""
    groups: dict[tuple[str, str], list[CellRow]] = {}
    for row in table.rows:
        if row.cell.mask_rle and row.cell.bbox:
            groups.setdefault((row.sample, row.cell.source_image), []).append(row)
    return groups


def cell_feature(row: CellRow, colours: dict, uncertain: bool) -> dict | None:
    polygons = outline_rings(row.cell)
    if not polygons:
        return None
    geometry = ({"type": "Polygon", "coordinates": polygons[0]} if len(polygons) == 1
                else {"type": "MultiPolygon", "coordinates": polygons})
    name = row.final or "unclassified"
    properties = {
        "objectType": "detection", "name": row.cell.cell_id,
        "classification": {"name": name, "color": list(colours.get(name, UNCLASSIFIED_COLOUR))},
        "isLocked": False,
        "measurements": {k: v for k, v in (("entropy", row.entropy), ("k_used", row.k_used),
                                          ("area_px", row.cell.area_px)) if v is not None},
        "cell_id": row.cell.cell_id, "sample": row.sample, "predicted": row.predicted,
        "user_label": row.user_label, "uncertain": uncertain}
    return {"type": "Feature", "id": str(uuid.uuid5(CELL_NAMESPACE, row.cell.cell_id)), "geometry": geometry,
            "properties": properties}


def write_geojson(table: ExportTable, out_dir: str | Path) -> ExportSummary:
    out_dir = Path(out_dir)
    summary = ExportSummary()
    colours = class_colours(table.classes)
    writer = SafeWriter(out_dir)
    groups = rows_by_field(table)
    skipped = len(table.rows) - sum(map(len, groups.values()))
    check_writable(out_dir, "write the GeoJSON export")
    with disk_errors(out_dir, "write the GeoJSON export"):
        out_dir.mkdir(parents=True, exist_ok=True)
        for (sample, image), rows in groups.items():
            features = [f for r in rows if (f := cell_feature(r, colours, table.is_uncertain(r)))]
            collection = {"type": "FeatureCollection", "features": features,
                          "properties": {"image": str(Path(image).resolve()), "sample": sample}}
            text = json.dumps(collection)
            summary.files.append(writer.save(lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"),
                                             (sample,), Path(image).name, ".geojson"))
            summary.cells += len(features)
    if skipped:
        summary.notes.append(f"{skipped} cell(s) have no outline in a field (ready-made crops): not in the GeoJSON")
    if not groups:
        summary.notes.append("no segmented field among the cells: nothing for QuPath")
    return summary
