#!/usr/bin/env bash
# Fetches the real radiographs of the PyPI package `pydicom-data` (plus the compressed variants the
# tests decode) into datasets/downloads/pydicom-data/. Idempotent; needs python3 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=downloads/pydicom-data
files=(RG1_UNCR.dcm RG1_J2KR.dcm RG3_UNCR.dcm RG3_J2KR.dcm emri_small.dcm emri_small_RLE.dcm
       emri_small_jpeg_ls_lossless.dcm JPEG-LL.dcm JPGLosslessP14SV1_1s_1f_8b.dcm SC_rgb.dcm)
if [ -f "$dest/.complete" ]; then exit 0; fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" pydicom-data==1.0.0
mkdir -p "$dest"
python3 - "$tmp"/pydicom_data-*.whl "$dest" "${files[@]}" <<'PY'
import sys, zipfile, pathlib
wheel, dest, names = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        (dest / name).write_bytes(z.read(f"data_store/data/{name}"))
PY
touch "$dest/.complete"
echo "pydicom-data radiographs in datasets/$dest"
