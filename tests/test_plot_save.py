"""plots.save_figure: one draw, cropped to the content, the look of bbox_inches="tight".

The PNG of a figure saved by save_figure must have (within a few pixels) the size of the
same figure saved with ``savefig(bbox_inches="tight")`` and nearly the same pixels; a
label far outside the figure's canvas must still be in the PNG (the tight path grows the
canvas); and the plots must not import pyplot.
"""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402

from nirbeam.sinks import plots  # noqa: E402


def _figure(far_label=False):
    fig, (a, b) = plots.plt.subplots(2, 1, figsize=(6, 4), sharex=True)
    x = np.linspace(0, 10, 200)
    a.plot(x, np.sin(x), label="sin")
    b.plot(x, np.cos(x) * 1e6)
    a.set_title("a title")
    a.legend()
    b.set_xlabel("x label")
    b.set_ylabel("y label")
    if far_label:
        b.text(1.6, 0.5, "far right", transform=b.transAxes)
    return fig


def _tight(fig, path):
    fig.savefig(path, dpi=plots.DPI, bbox_inches="tight")


@pytest.mark.parametrize("far", [False, True])
def test_like_tight_bbox(tmp_path, far):
    plots.save_figure(_figure(far), tmp_path / "new.png")
    _tight(_figure(far), tmp_path / "old.png")
    new = np.asarray(Image.open(tmp_path / "new.png").convert("L"), np.float64)
    old = np.asarray(Image.open(tmp_path / "old.png").convert("L"), np.float64)
    assert abs(new.shape[0] - old.shape[0]) <= 4 and abs(new.shape[1] - old.shape[1]) <= 4
    if far:  # the far label widens the PNG well past the 6 in figure
        assert new.shape[1] > 6 * plots.DPI + 50
    # same content: the ink (dark pixels) of both, at the best alignment (shifts of up to
    # 4 px either way); a blank or misplaced drawing gives ~1
    p = np.pad(new, 4, constant_values=255.0)
    ink_old = old < 160
    best = min(np.count_nonzero((p[4 + dy:4 + dy + old.shape[0], 4 + dx:4 + dx + old.shape[1]] < 160)
                                != ink_old) for dy in range(-4, 5) for dx in range(-4, 5)
               if p[4 + dy:4 + dy + old.shape[0], 4 + dx:4 + dx + old.shape[1]].shape == old.shape)
    # measured 0.29 (thin lines and glyphs re-rasterised at a sub-pixel offset); 1 px off: ~0.9
    assert best / np.count_nonzero(ink_old) < 0.45


def test_widen_keeps_axes_in_inches():
    fig = _figure()
    before = [ax.get_position().transformed(fig.dpi_scale_trans.inverted() + fig.transFigure)
              for ax in fig.axes]
    w, h = fig.get_size_inches()
    plots._widen(fig, 1.0)
    assert tuple(fig.get_size_inches()) == (w + 2, h + 2)
    for ax, b in zip(fig.axes, before, strict=True):
        p = ax.get_position()
        W, H = fig.get_size_inches()
        assert p.x0 * W == pytest.approx(b.x0 + 1) and p.width * W == pytest.approx(b.width)
        assert p.y0 * H == pytest.approx(b.y0 + 1) and p.height * H == pytest.approx(b.height)


def test_content_box():
    a = np.full((50, 60, 4), 255, np.uint8)
    a[10:20, 30:41] = 0
    rows, cols = plots._content_box(a, 3)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (7, 23, 27, 44)
    a[0, 5] = 0  # ink on the edge: the caller falls back to bbox_inches="tight"
    assert plots._content_box(a, 3) is None


def _content_box_per_channel(rgba, pad):
    """The reference: a pixel is ink when any of its four channels differs from the
    corner pixel's (plain numpy, channel by channel)."""
    ink = np.zeros(rgba.shape[:2], bool)
    for ch in range(4):
        ink |= rgba[..., ch] != rgba[0, 0, ch]
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return slice(None), slice(None)
    ny, nx = ink.shape
    if rows[0] == 0 or cols[0] == 0 or rows[-1] == ny - 1 or cols[-1] == nx - 1:
        return None
    return (slice(max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, ny)),
            slice(max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, nx)))


def test_content_box_sees_a_change_in_any_one_channel():
    rng = np.random.default_rng(7)
    for trial in range(300):
        bg = rng.integers(0, 256, 4).astype(np.uint8)
        a = np.broadcast_to(bg, (int(rng.integers(3, 40)), int(rng.integers(3, 40)), 4)).copy()
        if trial % 4:
            y, x, ch = rng.integers(0, a.shape[0]), rng.integers(0, a.shape[1]), trial % 4
            a[y:y + int(rng.integers(1, 6)), x:x + int(rng.integers(1, 6)), ch] ^= np.uint8(1 << int(rng.integers(0, 8)))
        assert plots._content_box(a, 2) == _content_box_per_channel(a, 2), trial
    view = np.full((30, 30, 4), 255, np.uint8)[:, ::-1]  # not contiguous: still right
    view[5, 6, 3] = 254
    assert plots._content_box(view, 1) == _content_box_per_channel(view, 1)


def test_plots_do_not_import_pyplot(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from nirbeam.sinks import plots\n"
        f"plots.plot_white_light(np.arange(50.), 1 + np.random.default_rng(0).normal(0, 1e-3, 50), {str(tmp_path / 'w.png')!r})\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "w.png").stat().st_size > 1000


def test_one_draw_without_fallback(tmp_path, monkeypatch):
    # labels past the figure's own edges fit in the widened canvas: no second draw
    from matplotlib.figure import Figure

    def no_savefig(self, *a, **k):
        raise AssertionError("fell back to savefig(bbox_inches='tight')")

    monkeypatch.setattr(Figure, "savefig", no_savefig)
    fig = _figure()
    fig.subplots_adjust(left=0.01, bottom=0.01, top=0.99)  # labels outside the 6 x 4 in
    plots.save_figure(fig, tmp_path / "a.png")
    w, h = Image.open(tmp_path / "a.png").size
    assert w > 6 * plots.DPI and h > 4 * plots.DPI  # the labels are in the PNG
