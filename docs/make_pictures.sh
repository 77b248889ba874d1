#!/usr/bin/env bash
# The pictures of README's "Looking inside", from a trained generator:
#
#   docs/make_pictures.sh runs/shakes data/tinyshakespeare/valid.txt
#
# surprise.png and unit.png are screenshots of `seqtool inspect --html` pages taken with
# headless Chromium (apt-get install chromium); saturation.png and curves.png are
# written by seqtool itself (the plot extra).
set -euo pipefail
RUN=${1:?usage: docs/make_pictures.sh RUN TEXT_FILE}
TEXT=${2:?usage: docs/make_pictures.sh RUN TEXT_FILE}
SEQTOOL=${SEQTOOL:-.venv/bin/seqtool}
CHROMIUM=${CHROMIUM:-chromium}
DOCS=$(dirname "$0")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

head -c 400 "$TEXT" > "$WORK/sample.txt"
# the unit that follows the position in the line best, found on a longer text
head -c 20000 "$TEXT" > "$WORK/long.txt"
UNIT=$("$SEQTOOL" inspect "$RUN" "$WORK/long.txt" --find line-position --json 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["units"][0]["unit"])')

"$SEQTOOL" inspect "$RUN" "$WORK/sample.txt" --html "$WORK/surprise.html" > /dev/null 2>&1
"$SEQTOOL" inspect "$RUN" "$WORK/sample.txt" --unit "$UNIT" --html "$WORK/unit.html" \
    > /dev/null 2>&1
# the unit's page without the surprise view above it
sed -i 's|</style>|h2#surprise, h2#surprise + * {display: none}</style>|' "$WORK/unit.html"
for view in surprise unit; do
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --window-size=900,480 --screenshot="$DOCS/$view.png" "file://$WORK/$view.html" \
        > /dev/null 2>&1
done
"$SEQTOOL" inspect "$RUN" "$WORK/long.txt" --saturation "$DOCS/saturation.png" > /dev/null 2>&1
"$SEQTOOL" plot "$RUN" --out "$DOCS/curves.png" 2>/dev/null
echo "wrote $DOCS/surprise.png unit.png saturation.png curves.png (unit $UNIT)"
