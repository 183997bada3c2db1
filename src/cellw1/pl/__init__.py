"""Figures for notebooks and reports, scanpy style: ``cellw1.pl.<figure>(...)``.

Every function takes plain arrays, dicts or tables (or an object holding them, such as an
evaluation result or a fitted model), draws with matplotlib and follows one convention:

- ``ax=None`` makes a new figure; ``ax=`` draws into the caller's matplotlib ``Axes`` (a
  sequence of them, one per panel, for figures with several panels).
- ``save=`` writes the figure to that file, atomically, in the format its suffix names.
- The return value is always the :class:`matplotlib.figure.Figure` drawn into: the new one,
  or the one holding ``ax``. Nothing is shown: ``plt.show()`` is never called, no global
  backend is changed, and new figures are not registered with ``pyplot``. In Jupyter the
  returned figure displays as a cell's value (with the inline backend, which importing
  scanpy or pyplot turns on); elsewhere save it or call ``fig.savefig``.

Functions: :func:`metric_bars`, :func:`forest`, :func:`embedding`, :func:`mean_change`,
:func:`history`, :func:`transport`, :func:`screen_effects`, :func:`screen_map`, and :func:`save_figure`.
"""

from ._bars import metric_bars
from ._embedding import embedding
from ._figure import save_figure
from ._forest import forest
from ._genes import mean_change
from ._history import history
from ._screen import screen_effects, screen_map
from ._transport import transport

__all__ = [
    "embedding",
    "forest",
    "history",
    "mean_change",
    "metric_bars",
    "save_figure",
    "screen_effects",
    "screen_map",
    "transport",
]
