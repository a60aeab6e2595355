"""Server-side SVG charts: bars (stacked or not) and per-lane histograms with markers, each titled for screen readers."""

from django.utils.html import escape, format_html, mark_safe

# Dark enough against white for graphics (WCAG 1.4.11, at least 3:1), and told apart by the legend's text too.
PALETTE = ["#1f4e79", "#b34700", "#2e7d32", "#7b1fa2", "#c62828", "#00695c", "#5d4037", "#37474f", "#ad1457", "#283593"]
OTHER = "#757575"
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 240, 64, 48, 12


def color(i):
    """Return the i-th series colour."""
    return PALETTE[i % len(PALETTE)]


def svg(chart_id, title, body, height=HEIGHT):
    """Return an SVG element titled `title` (its accessible name) holding `body`."""
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{0}-title" viewBox="0 0 {1} {2}" '
        'width="{1}" class="chart"><title id="{0}-title">{3}</title>{4}</svg>',
        chart_id, WIDTH, height, title, body,
    )


def bars(chart_id, title, labels, series, fmt=str, stacked=True):
    """Return a bar chart: one bar per label, made of each series' value (stacked) or side by side.

    `series` is [(name, [value per label])]; `fmt` writes a value for the axis and the tooltips.
    """
    if not labels:
        return svg(chart_id, title, format_html('<text x="{}" y="{}">No data in this period.</text>', LEFT, TOP + 20))
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))] if stacked else [
        max((values[i] for _, values in series), default=0) for i in range(len(labels))
    ]
    top = max(totals) or 1
    plot_h, plot_w = HEIGHT - BOTTOM - TOP, WIDTH - LEFT - 8
    slot = plot_w / len(labels)
    width = max(1.0, slot * 0.8 / (1 if stacked else len(series)))
    parts = [axis(fmt(top), plot_h)]  # every number below is formatted here; every text is escaped
    for i, label in enumerate(labels):
        base = 0
        for k, (name, values) in enumerate(series):
            value = values[i]
            if not value:
                continue
            h = plot_h * value / top
            x = LEFT + i * slot + slot * 0.1 + (0 if stacked else k * width)
            y = TOP + plot_h - h - (plot_h * base / top if stacked else 0)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{h:.1f}" fill="{color(k)}">'
                f"<title>{escape(label)}: {escape(name)} {escape(fmt(value))}</title></rect>"
            )
            base += value if stacked else 0
        if len(labels) <= 16 or i % max(1, len(labels) // 8) == 0:
            parts.append(
                f'<text x="{LEFT + i * slot + slot / 2:.1f}" y="{HEIGHT - BOTTOM + 14}" font-size="11" '
                f'text-anchor="middle" fill="#333">{escape(short(label))}</text>'
            )
    key, lines = legend([name for name, _ in series], HEIGHT - 16)
    parts.append(key)
    return svg(chart_id, title, mark_safe("".join(parts)), height=HEIGHT + 16 * (lines - 1))


def short(label, most=14):
    """Return a label cut to `most` characters, so axis labels do not overlap; the tooltip has it whole."""
    label = str(label)
    if len(label) == 10 and label[4] == label[7] == "-":
        return label[5:]  # a day: its month and day are enough under a bar
    return label if len(label) <= most else label[: most - 1] + "…"


def axis(top_label, plot_h):
    """Return the y axis: a baseline, a top gridline and its value."""
    base = TOP + plot_h
    return (
        f'<line x1="{LEFT}" y1="{base}" x2="{WIDTH - 8}" y2="{base}" stroke="#767676"/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{WIDTH - 8}" y2="{TOP}" stroke="#ddd"/>'
        f'<text x="{LEFT - 4}" y="{TOP + 4}" font-size="11" text-anchor="end" fill="#333">{escape(top_label)}</text>'
        f'<text x="{LEFT - 4}" y="{base}" font-size="11" text-anchor="end" fill="#333">0</text>'
    )


def legend(names, y):
    """Return (a legend: a swatch and a name per series, wrapped to the chart's width, its number of lines)."""
    parts, x, lines = [], LEFT, 1
    for k, name in enumerate(names):
        width = 14 + 7 * len(str(name)) + 12
        if x > LEFT and x + width > WIDTH:
            x, y, lines = LEFT, y + 16, lines + 1
        parts.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{color(k)}"/>'
            f'<text x="{x + 14}" y="{y}" font-size="11" fill="#333">{escape(name)}</text>'
        )
        x += width
    return mark_safe("".join(parts)), lines


def lanes(chart_id, title, bins, rows):
    """Return one histogram lane per row, with p50 and p95 marked.

    `bins` are the bin labels; each row is (name, [count per bin], p50 bin position, p95 bin position), where a
    position is a float bin index (1.5: the middle of the second bin).
    """
    lane_h, head = 34, 18
    height = head + lane_h * max(1, len(rows)) + 30
    plot_w = WIDTH - 200
    slot = plot_w / len(bins)
    parts = []
    for j, label in enumerate(bins):
        parts.append(
            f'<text x="{190 + j * slot + slot / 2:.1f}" y="{height - 14}" font-size="10" text-anchor="middle" '
            f'fill="#333">{escape(label)}</text>'
        )
    for r, (name, counts, p50, p95) in enumerate(rows):
        y0 = head + r * lane_h
        top = max(counts) or 1
        parts.append(
            f'<text x="184" y="{y0 + lane_h / 2:.1f}" font-size="11" text-anchor="end" fill="#333">'
            f"{escape(short(name, 28))}</text>"
        )
        for j, count in enumerate(counts):
            if count:
                h = (lane_h - 8) * count / top
                parts.append(
                    f'<rect x="{190 + j * slot + 1:.1f}" y="{y0 + lane_h - 4 - h:.1f}" width="{slot - 2:.1f}" '
                    f'height="{h:.1f}" fill="{color(0)}"><title>{escape(name)} {escape(bins[j])}: {count}</title></rect>'
                )
        for mark, position, stroke in (("p50", p50, "#b34700"), ("p95", p95, "#c62828")):
            if position is not None:
                x = 190 + position * slot
                parts.append(
                    f'<line x1="{x:.1f}" y1="{y0 + 6}" x2="{x:.1f}" y2="{y0 + lane_h - 4}" stroke="{stroke}" '
                    f'stroke-width="2"><title>{escape(name)} {mark}</title></line>'
                    f'<text x="{x:.1f}" y="{y0 + 5}" font-size="9" fill="{stroke}" text-anchor="middle">{mark}</text>'
                )
    return svg(chart_id, title, mark_safe("".join(parts)), height=height)


