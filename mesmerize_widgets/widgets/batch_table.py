"""``BatchTable``: the batch as an interactive table that runs, cancels, removes and duplicates items.

Every change goes through the model (``df.caiman`` and ``accessors.operations``), so the user's
DataFrame and the store stay in step; the table reads the store directly to refresh, and asks
the runner to reap runs whose submitter died (``runner.reap_stale``). The table is an ipydatagrid ``DataGrid`` when ipydatagrid is installed, else a plain
ipywidgets list; both sit behind the same small view interface, and the table logic (filter,
sort, selection by uuid, live refresh) is ours so it works, and is tested, without a browser.

Live status: while any item is queued or running, the table subscribes to the batch's watcher
(:func:`mesmerize_widgets.accessors.watch.watch_batch`, one thread per batch shared with the
viewers) every ``poll_interval`` seconds and updates the changed cells and one progress bar per
submission. Removing and duplicating are model operations (``df.caiman.remove_items``,
``df.caiman.duplicate_item``) that a script calls the same way.
"""

from __future__ import annotations

import ast
import html
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd
import traitlets

from ..accessors.frame import append_record, drop_row, set_row, store_of
from ..accessors.operations import params_diffs, removal_plan
from ..accessors.watch import BatchChange, Subscription, watch_batch
from ..algorithms import algorithms, get_algorithm
from ..errors import MesmerizeError, ParamError, UnknownAlgorithmError
from ..runner.eta import running_text
from ..store import ACTIVE, FINISHED, STATUSES

#: The columns shown, in order; "differs" holds the params that differ from the item's siblings.
DISPLAY_COLUMNS = ["item_name", "algo", "status", "duration", "input", "differs", "params", "comments"]
ALL = "all"
_ERR = "color:#b00020"
_OK = "color:#1b5e20"


# -- pure helpers: batch DataFrame -> what the table shows ----------------------------------------
def status_text(rec: dict[str, Any], now: float | None = None) -> str:
    """'running 42% · patch 11/25 · ~3 min left' while running, else the status itself."""
    if rec["status"] == "running":
        return f"running {running_text(rec, now)}"
    return str(rec["status"])


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def params_summary(algo: str, params: Any) -> str:
    """The params that differ from the algorithm's defaults (all of them for unknown algos)."""
    if not isinstance(params, dict):
        return ""
    main = params.get("main", {}) if isinstance(params.get("main"), dict) else {}
    try:
        defaults = get_algorithm(algo).schema.defaults()["main"]
    except UnknownAlgorithmError:
        defaults = {}
    shown = {k: v for k, v in main.items() if k not in defaults or repr(defaults[k]) != repr(v)}
    extras = {k: v for k, v in params.items() if k != "main"}
    return _fmt_params({**shown, **extras})


def _effective(algo: str, params: Any) -> Any:
    """Params with the schema's defaults filled in, so an omitted default equals the written one."""
    try:
        return get_algorithm(algo).schema.validate(params, fill_defaults=True)
    except MesmerizeError:
        return params


def sibling_diffs(df: pd.DataFrame) -> dict[str, str]:
    """uuid -> the params in which it differs from its siblings (same algo and item_name)."""
    out: dict[str, str] = {}
    if not len(df):
        return out
    counts = df.groupby(["algo", "item_name"], dropna=False).size()
    for (algo, name), n in counts.items():
        if n < 2:
            continue
        sub = df[(df["algo"] == algo) & (df["item_name"] == name)].copy()
        sub["params"] = [_effective(algo, p) for p in sub["params"]]
        diffs = params_diffs(sub, algo, name).astype(object)  # python scalars for readable reprs
        for idx, row in diffs.iterrows():
            out[str(df.at[idx, "uuid"])] = _fmt_params(row.to_dict())
    return out


def _duration(rec: pd.Series, started: dict[str, float]) -> str:
    if rec["status"] in ACTIVE and rec["uuid"] in started:
        return f"{time.monotonic() - started[rec['uuid']]:.0f} s..."
    d = rec["algo_duration"]
    return "" if d is None or (isinstance(d, float) and d != d) else str(d)


def _seconds(text: str) -> float:
    try:
        return float(str(text).split()[0])
    except (ValueError, IndexError):
        return float("inf")


def display_frame(df: pd.DataFrame, started: dict[str, float] | None = None,
                  running: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """The table's rows for a batch DataFrame: index '#' (position in the batch), plus 'uuid'.
    ``running``: the store's records of running items, whose step and start the DataFrame's
    columns do not hold."""
    started = started or {}
    running = running or {}
    names = dict(zip(df["uuid"], df["item_name"], strict=True))
    diffs = sibling_diffs(df)
    rows = []
    for _, r in df.iterrows():
        parent = r["parent_uuid"]
        if isinstance(parent, str) and parent:
            src = f"<- {names.get(parent, parent[:8])}"
        else:
            src = Path(str(r["input_movie_path"])).name if r["input_movie_path"] else ""
        rows.append({
            "item_name": str(r["item_name"]),
            "algo": str(r["algo"]),
            "status": status_text(running.get(r["uuid"], r)),
            "duration": _duration(r, started),
            "input": src,
            "differs": diffs.get(r["uuid"], ""),
            "params": params_summary(r["algo"], r["params"]),
            "comments": "" if r["comments"] is None else str(r["comments"]),
            "uuid": str(r["uuid"]),
        })
    out = pd.DataFrame(rows, columns=[*DISPLAY_COLUMNS, "uuid"], dtype=object)
    out.index = pd.RangeIndex(len(out), name="#")
    return out


# -- views: how the rows are drawn and picked ------------------------------------------------------
class _GridView:
    """ipydatagrid DataGrid: row selection, header sort/filter, editable comments."""

    def __init__(self, on_user_select: Callable[[list[str]], None],
                 on_user_edit: Callable[[str, str, Any], None]):
        from ipydatagrid import DataGrid, TextRenderer

        self._on_user_select = on_user_select
        self._on_user_edit = on_user_edit
        self._uuids: list[str] = []
        self._quiet = False
        # constant colours only: ipydatagrid 1.4's frontend fails on VegaExpr renderers in Voila
        # ("r.scale is not a function") and leaves the whole column blank
        highlight = TextRenderer(background_color="#fff3b0")
        self.grid = DataGrid(
            display_frame_empty(), selection_mode="row", editable=True, base_column_size=110,
            renderers={"differs": highlight},
            column_widths={"#": 40, "item_name": 160, "differs": 160, "params": 220, "comments": 180},
            layout=widgets.Layout(height="320px", width="100%"),
        )
        self.grid.observe(self._selections_changed, names="selections")
        self.grid.on_cell_change(self._cell_changed)
        self.widget = self.grid

    def set_frame(self, frame: pd.DataFrame) -> None:
        self._uuids = list(frame["uuid"])
        self._quiet = True
        try:
            self.grid.clear_selection()
            self.grid._visible_rows = []  # the frontend sends its new view order after the data
            self.grid.data = frame[DISPLAY_COLUMNS]
        finally:
            self._quiet = False

    def update_cell(self, row: int, column: str, value: Any) -> None:
        self._quiet = True
        try:
            self.grid.set_cell_value_by_index(column, row, value)
        finally:
            self._quiet = False

    def visible_order(self) -> list[int]:
        """Data rows in the order the user sees them (after header sorts and filters)."""
        n = len(self._uuids)
        vis = [int(i) for i in self.grid._visible_rows if 0 <= int(i) < n]
        return vis if len(vis) == len(self.grid._visible_rows) and vis else list(range(n))

    def show_selection(self, uuids: Sequence[str]) -> None:
        pos = {u: i for i, u in enumerate(self._uuids)}
        order = self.visible_order()
        at = {row: k for k, row in enumerate(order)}
        rects = [{"r1": at[pos[u]], "c1": 0, "r2": at[pos[u]], "c2": len(DISPLAY_COLUMNS) - 1}
                 for u in uuids if u in pos and pos[u] in at]
        self._quiet = True
        try:
            self.grid.selections = rects
        finally:
            self._quiet = False

    def _selections_changed(self, change: dict) -> None:
        if self._quiet:
            return
        order = self.visible_order()
        picked: list[int] = []
        for rect in change["new"]:
            lo, hi = sorted((int(rect["r1"]), int(rect["r2"])))
            picked.extend(r for r in range(lo, hi + 1) if r < len(order) and r not in picked)
        self._on_user_select([self._uuids[order[r]] for r in sorted(picked)])

    def _cell_changed(self, cell: dict) -> None:
        if self._quiet:
            return
        row = int(cell["row"])
        if 0 <= row < len(self._uuids):
            self._on_user_edit(self._uuids[row], cell["column"], cell["value"])


def display_frame_empty() -> pd.DataFrame:
    return display_frame(pd.DataFrame(columns=["uuid", "item_name", "algo", "parent_uuid"]))[DISPLAY_COLUMNS]


class _ListView:
    """Fallback without ipydatagrid: a multi-select list of rows above an HTML table."""

    def __init__(self, on_user_select: Callable[[list[str]], None],
                 on_user_edit: Callable[[str, str, Any], None]):
        self._on_user_select = on_user_select
        self._quiet = False
        self._frame = display_frame_empty()
        self.select = widgets.SelectMultiple(options=[], rows=8, layout=widgets.Layout(width="100%"),
                                             tooltip="select items (shift/ctrl-click for several)")
        self.table = widgets.HTML()
        self.select.observe(self._changed, names="value")
        self.widget = widgets.VBox([self.select, self.table])

    def set_frame(self, frame: pd.DataFrame) -> None:
        self._frame = frame.copy()
        self._quiet = True
        try:
            self.select.options = [(self._label(r), r["uuid"]) for _, r in frame.iterrows()]
        finally:
            self._quiet = False
        self.table.value = frame[DISPLAY_COLUMNS].to_html(escape=True, border=0)

    def update_cell(self, row: int, column: str, value: Any) -> None:
        self._frame.iat[row, self._frame.columns.get_loc(column)] = value
        self.set_frame(self._frame)

    def visible_order(self) -> list[int]:
        return list(range(len(self._frame)))

    def show_selection(self, uuids: Sequence[str]) -> None:
        self._quiet = True
        try:
            self.select.value = tuple(u for u in uuids if u in set(self._frame["uuid"]))
        finally:
            self._quiet = False

    @staticmethod
    def _label(r: pd.Series) -> str:
        return f"{r['item_name']} | {r['algo']} | {r['status']} | {r['differs'] or r['params']}"

    def _changed(self, change: dict) -> None:
        if not self._quiet:
            self._on_user_select(list(change["new"]))


def _make_view(kind: str, on_select: Callable, on_edit: Callable) -> _GridView | _ListView:
    if kind not in ("auto", "datagrid", "list"):
        raise ValueError(f"view must be 'auto', 'datagrid' or 'list', got {kind!r}")
    if kind in ("auto", "datagrid"):
        try:
            return _GridView(on_select, on_edit)
        except ImportError:
            if kind == "datagrid":
                raise
    return _ListView(on_select, on_edit)


_UNSET: Any = object()


class BatchTable(widgets.VBox):
    """The batch as a table: filter, sort, select; run, cancel, remove, duplicate, open.

    ``selected_uuids`` (a traitlet) and ``on_selection(callback)`` tell other widgets what is
    selected; ``on_open(callback)`` receives the row the user asked to open.
    """

    selected_uuids = traitlets.List(traitlets.Unicode(), help="uuids of the selected rows, in table order")

    def __init__(self, df: pd.DataFrame, *, view: str = "auto", poll_interval: float = 0.5):
        store_of(df)  # raises a clear error when df is not a batch
        self._df = df
        self.poll_interval = poll_interval
        self._lock = threading.RLock()
        self._filter: dict[str, str | None] = {"algo": None, "status": None, "name": ""}
        self._sort: tuple[str | None, bool] = (None, True)
        self._frame = display_frame_empty().assign(uuid=[])
        self._started: dict[str, float] = {}
        self._running: dict[str, dict[str, Any]] = {}  # store records of running items (their step)
        self._submissions: list[dict[str, Any]] = []
        self._selection_callbacks: list[Callable[[list[pd.Series]], None]] = []
        self._open_callbacks: list[Callable[[pd.Series], None]] = []
        self._watch: Subscription | None = None
        self._poll_kick = False
        self._closed = False
        self._syncing_widgets = False
        self.last_message = ""
        #: keywords of ``df.caiman.export_nwb`` for "export NWB": ``session`` (a new file needs
        #: session_start_time and subject), ``imaging_plane``, ``include_movie``, ...
        self.nwb_options: dict[str, Any] = {}

        self.view = _make_view(view, self._user_selected, self._user_edited)
        self._build_controls()
        super().__init__(children=[
            self.filter_box, self.view.widget, self.actions_box, self.confirm_box,
            self.duplicate_box, self.progress_box, self.message,
        ])
        self.observe(self._selection_changed, names="selected_uuids")
        self.refresh()

    # -- controls ----------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        self._build_filter_box()
        self._build_actions_box()
        self._build_confirm_box()
        self._build_duplicate_box()
        self.progress_box = widgets.VBox()
        self.message = widgets.HTML()

    def _button(self, desc: str, icon: str, tip: str, action: Callable[[], Any], style: str = "") -> widgets.Button:
        b = widgets.Button(description=desc, icon=icon, tooltip=tip, button_style=style,
                           layout=widgets.Layout(width="auto"))
        b.on_click(lambda _: self._guard(action))
        return b

    def _build_filter_box(self) -> None:
        self.name_filter = widgets.Text(placeholder="filter by name", description="name",
                                        continuous_update=True, tooltip="show items whose name contains this")
        self.algo_filter = widgets.Dropdown(options=[ALL], value=ALL, description="algo")
        self.status_filter = widgets.Dropdown(options=[ALL, *STATUSES], value=ALL, description="status")
        self.sort_dropdown = widgets.Dropdown(options=[("batch order", "")] + [(c, c) for c in DISPLAY_COLUMNS],
                                              value="", description="sort")
        self.sort_ascending = widgets.ToggleButton(value=True, description="ascending", icon="sort-amount-asc")
        for w in (self.name_filter, self.algo_filter, self.status_filter):
            w.observe(self._filter_widgets_changed, names="value")
        for w in (self.sort_dropdown, self.sort_ascending):
            w.observe(self._sort_widgets_changed, names="value")
        self.filter_box = widgets.HBox([self.name_filter, self.algo_filter, self.status_filter,
                                        self.sort_dropdown, self.sort_ascending],
                                       layout=widgets.Layout(flex_flow="row wrap"))

    def _build_actions_box(self) -> None:
        button = self._button
        self.run_button = button("run", "play", "run the selected items on Dask", self.run_selected, "success")
        self.cancel_button = button("cancel", "stop", "cancel the selected queued/running items",
                                    self.cancel_selected, "warning")
        self.remove_button = button("remove", "trash", "remove the selected items (asks to confirm)",
                                    lambda: self.remove_selected(confirm=False), "danger")
        self.duplicate_button = button("duplicate", "copy", "add a copy of the selected item with edited params",
                                       self.show_duplicate_editor)
        self.open_button = button("open", "eye", "show the selected item in its viewer", self.open_selected, "info")
        self.refresh_button = button("refresh", "refresh", "reload the batch from disk", self.refresh)
        self.nwb_folder = widgets.Text(value=str(store_of(self._df).path / "nwb"), description="NWB folder",
                                       tooltip="where 'export NWB' writes one <uuid>.nwb per item")
        self.nwb_button = button("export NWB", "download", "write the selected cnmf/cnmfe/onacid items to NWB "
                                 "files in the NWB folder (session metadata and options: table.nwb_options)",
                                 self.export_selected_nwb)
        self.comment_text = widgets.Text(placeholder="comment for the selected item", description="comment")
        self.comment_button = button("save", "save", "save the comment of the selected item",
                                     lambda: self.edit_comment(None, self.comment_text.value))
        self.actions_box = widgets.HBox([self.run_button, self.cancel_button, self.remove_button,
                                         self.duplicate_button, self.open_button, self.refresh_button,
                                         self.comment_text, self.comment_button, self.nwb_folder,
                                         self.nwb_button],
                                        layout=widgets.Layout(flex_flow="row wrap"))

    def _build_confirm_box(self) -> None:
        self.confirm_html = widgets.HTML()
        self.remove_dependents = widgets.Checkbox(
            value=False, description="also remove dependents", indent=False,
            tooltip="also remove the items that take a selected item as their input")
        self.remove_dependents.observe(lambda _: self._refresh_confirm(), names="value")
        self.confirm_button = self._button("confirm remove", "check", "remove now",
                                           lambda: self.remove_selected(confirm=True), "danger")
        self.confirm_cancel = self._button("keep", "times", "do not remove", self._hide_confirm)
        self.confirm_box = widgets.HBox([self.confirm_html, self.remove_dependents, self.confirm_button,
                                         self.confirm_cancel], layout=widgets.Layout(display="none"))

    def _build_duplicate_box(self) -> None:
        self.duplicate_name = widgets.Text(description="name", tooltip="item name of the copy")
        self.duplicate_params = widgets.Textarea(
            description="params", layout=widgets.Layout(width="60%", height="120px"),
            tooltip="params['main'] as a Python dict; keys left out keep the original's value")
        self.duplicate_add = self._button("add copy", "plus", "validate and add the copy",
                                          self._duplicate_from_editor, "success")
        self.duplicate_close = self._button("close", "times", "close the editor",
                                            lambda: setattr(self.duplicate_box.layout, "display", "none"))
        self.duplicate_box = widgets.VBox([
            widgets.HBox([self.duplicate_name, self.duplicate_add, self.duplicate_close]),
            self.duplicate_params], layout=widgets.Layout(display="none"))

    def _guard(self, action: Callable[[], Any]) -> None:
        """Run a button's action; any error becomes a message, never a traceback."""
        try:
            action()
        except Exception as e:
            self._say(f"{type(e).__name__}: {e}", error=True)

    def _say(self, text: str, error: bool = False) -> None:
        self.last_message = text
        self.message.value = f"<span style='{_ERR if error else _OK}'>{html.escape(text)}</span>"

    # -- data ----------------------------------------------------------------------------------------
    @property
    def df(self) -> pd.DataFrame:
        return self._df

    def refresh(self) -> None:
        """Reload every item from the store (other notebooks' changes too) and redraw."""
        from ..runner import reap_stale

        store = store_of(self._df)
        reap_stale(store)
        if self._apply_records(store.items()):
            self._ensure_polling()

    def _sync(self, records: list[dict[str, Any]]) -> bool:
        """Bring the user's df in line with the store in place, redraw; True while any is active."""
        with self._lock:
            df = self._df
            live = {r["uuid"]: r for r in records}
            self._running = {u: r for u, r in live.items() if r["status"] == "running"}
            for pos in reversed(range(len(df))):
                if df.iloc[pos]["uuid"] not in live:
                    drop_row(df, pos)
            have = set(df["uuid"])
            for rec in records:
                if rec["uuid"] in have:
                    set_row(df, rec["uuid"], rec)
                else:
                    append_record(df, rec)
            self._redraw()
            return any(r["status"] in ACTIVE for r in records)

    def _filtered_sorted(self) -> pd.DataFrame:
        frame = display_frame(self._df, self._started, self._running)
        f = self._filter
        if f["algo"]:
            frame = frame[frame["algo"] == f["algo"]]
        if f["status"]:
            status = self._df["status"].iloc[frame.index.to_numpy()].to_numpy()
            frame = frame[status == f["status"]]
        if f["name"]:
            frame = frame[frame["item_name"].str.contains(f["name"], case=False, regex=False)]
        column, ascending = self._sort
        if column:
            key = (lambda s: s.map(_seconds)) if column == "duration" else (lambda s: s.astype(str).str.lower())
            frame = frame.sort_values(column, ascending=ascending, kind="stable", key=key)
        return frame

    def _redraw(self) -> None:
        with self._lock:
            new = self._filtered_sorted()
            old = self._frame
            if list(new["uuid"]) == list(old["uuid"]) and list(new.index) == list(old.index):
                for i in range(len(new)):
                    for column in DISPLAY_COLUMNS:
                        if new.iat[i, new.columns.get_loc(column)] != old.iat[i, old.columns.get_loc(column)]:
                            self.view.update_cell(i, column, new.iat[i, new.columns.get_loc(column)])
                self._frame = new
            else:
                self._frame = new
                self.view.set_frame(new)
                kept = [u for u in self.selected_uuids if u in set(new["uuid"])]
                self.view.show_selection(kept)
                if kept != list(self.selected_uuids):
                    self.selected_uuids = kept
            self._update_filter_options()

    def _update_filter_options(self) -> None:
        algos = sorted(set(algorithms()) | set(self._df["algo"]))
        options = [ALL, *algos]
        if list(self.algo_filter.options) != options:
            self._syncing_widgets = True
            try:
                self.algo_filter.options = options
                self.algo_filter.value = self._filter["algo"] or ALL
            finally:
                self._syncing_widgets = False

    # -- filter and sort -------------------------------------------------------------------------------
    def set_filter(self, algo: str | None = _UNSET, status: str | None = _UNSET, name: str | None = _UNSET) -> None:
        """Show only matching rows; None or 'all' clears that filter, an omitted one is kept."""
        with self._lock:
            if algo is not _UNSET:
                self._filter["algo"] = None if algo in (None, ALL) else algo
            if status is not _UNSET:
                if status not in (None, ALL) and status not in STATUSES:
                    raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
                self._filter["status"] = None if status in (None, ALL) else status
            if name is not _UNSET:
                self._filter["name"] = name or ""
            self._syncing_widgets = True
            try:
                self._update_filter_options()
                if self._filter["algo"] and self._filter["algo"] not in self.algo_filter.options:
                    self.algo_filter.options = [*self.algo_filter.options, self._filter["algo"]]
                self.algo_filter.value = self._filter["algo"] or ALL
                self.status_filter.value = self._filter["status"] or ALL
                self.name_filter.value = self._filter["name"]
            finally:
                self._syncing_widgets = False
            self._redraw()

    def _filter_widgets_changed(self, _: dict) -> None:
        if not self._syncing_widgets:
            self.set_filter(algo=self.algo_filter.value, status=self.status_filter.value,
                            name=self.name_filter.value)

    def sort_by(self, column: str | None, ascending: bool = True) -> None:
        """Sort the rows by a shown column (None: batch order); 'duration' sorts by seconds."""
        if column not in (None, "", *DISPLAY_COLUMNS):
            raise ValueError(f"cannot sort by {column!r}; one of {DISPLAY_COLUMNS}")
        with self._lock:
            self._sort = (column or None, bool(ascending))
            self._syncing_widgets = True
            try:
                self.sort_dropdown.value = column or ""
                self.sort_ascending.value = bool(ascending)
            finally:
                self._syncing_widgets = False
            self._redraw()

    def _sort_widgets_changed(self, _: dict) -> None:
        self.sort_ascending.description = "ascending" if self.sort_ascending.value else "descending"
        if not self._syncing_widgets:
            self.sort_by(self.sort_dropdown.value or None, self.sort_ascending.value)

    def visible_rows(self) -> pd.DataFrame:
        """What the table shows, in its order: the shown columns plus 'uuid'; index '#' = batch position."""
        with self._lock:
            return self._frame.iloc[self.view.visible_order()].copy()

    # -- selection ----------------------------------------------------------------------------------
    def select(self, rows: Sequence[int | str] | int | str) -> None:
        """Select rows by position among the visible rows, or by uuid; [] clears."""
        if isinstance(rows, (int, str)):
            rows = [rows]
        with self._lock:
            visible = list(self.visible_rows()["uuid"])
            uuids = []
            for r in rows:
                if isinstance(r, str):
                    if r not in visible:
                        raise KeyError(f"no visible item with uuid {r!r}")
                    uuids.append(r)
                else:
                    uuids.append(visible[r])
            ordered = [u for u in visible if u in set(uuids)]
            self.view.show_selection(ordered)
            self.selected_uuids = ordered

    def selected_rows(self) -> list[pd.Series]:
        """The selected items' rows of the batch DataFrame (``row.caiman`` works on them)."""
        with self._lock:
            return [self._df.caiman.uloc(u) for u in self.selected_uuids if (self._df["uuid"] == u).any()]

    def on_selection(self, callback: Callable[[list[pd.Series]], None], remove: bool = False) -> None:
        """Call ``callback(rows)`` whenever the selection changes (rows: list of pd.Series)."""
        if remove:
            self._selection_callbacks.remove(callback)
        else:
            self._selection_callbacks.append(callback)

    def _user_selected(self, uuids: list[str]) -> None:
        self.selected_uuids = uuids

    def _selection_changed(self, change: dict) -> None:
        rows = self.selected_rows()
        if len(rows) == 1:
            c = rows[0]["comments"]
            self.comment_text.value = "" if c is None else str(c)
        for cb in list(self._selection_callbacks):
            cb(rows)

    def _require_selection(self) -> list[str] | None:
        uuids = list(self.selected_uuids)
        if not uuids:
            self._say("select one or more items first", error=True)
            return None
        return uuids

    # -- editing ---------------------------------------------------------------------------------------
    def _user_edited(self, uuid: str, column: str, value: Any) -> None:
        if column == "comments":
            self._guard(lambda: self.edit_comment(uuid, value))
            return
        self._say(f"only comments can be edited in the table ({column!r} is not saved)", error=True)
        with self._lock:
            rows = list(self._frame["uuid"])
            if uuid in rows:
                i = rows.index(uuid)
                self.view.update_cell(i, column, self._frame.iat[i, self._frame.columns.get_loc(column)])

    def edit_comment(self, row: int | str | None, text: str) -> None:
        """Save a comment (row: visible position, uuid, or None for the selected item) in the store."""
        if row is None:
            uuids = self._require_selection()
            if uuids is None:
                return
            if len(uuids) > 1:
                self._say("select a single item to edit its comment", error=True)
                return
            row = uuids[0]
        uuid = row if isinstance(row, str) else str(self.visible_rows().iloc[row]["uuid"])
        text = "" if text is None else str(text)
        with self._lock:
            self._df.caiman.update_item(uuid, {"comments": text or None})
            self._redraw()
        self._say(f"comment saved for {self._df.caiman.uloc(uuid)['item_name']!r}")

    # -- running ------------------------------------------------------------------------------------
    def run_selected(self) -> Any:
        """Run the selected items without blocking; their rows update live. Returns the RunHandle."""
        uuids = self._require_selection()
        if uuids is None:
            return None
        with self._lock:
            status = dict(zip(self._df["uuid"], self._df["status"], strict=True))
            busy = [u for u in uuids if status.get(u) in ACTIVE]
            if busy:
                self._say(f"{len(busy)} selected item(s) already queued or running; cancel them first",
                          error=True)
                return None
            try:
                handle = self._df.caiman.run(items=uuids, wait=False)
            except Exception as e:
                self._say(f"could not start: {e}", error=True)
                return None
            now = time.monotonic()
            self._started.update(dict.fromkeys(uuids, now))
            bar = widgets.FloatProgress(value=0, min=0, max=len(uuids), bar_style="info",
                                        layout=widgets.Layout(width="40%"))
            label = widgets.HTML()
            self._submissions.append({"uuids": uuids, "bar": bar, "label": label})
            self.progress_box.children = [*self.progress_box.children, widgets.HBox([bar, label])]
            self._redraw()
        self._say(f"started {len(uuids)} item(s)")
        self._ensure_polling()
        return handle

    def cancel_selected(self) -> dict[str, str]:
        """Cancel the selected queued or running items; returns their statuses now."""
        uuids = self._require_selection()
        if uuids is None:
            return {}
        with self._lock:
            out = self._df.caiman.cancel(items=uuids)
            self._redraw()
        active = [u for u in uuids if out.get(u) in ACTIVE]
        self._say(f"cancel requested for {len(uuids)} item(s)"
                  + (f"; {len(active)} still stopping" if active else ""))
        if active:
            self._ensure_polling()
        return out

    def export_selected_nwb(self, folder: str | Path | None = None) -> list[Path]:
        """Write each selected item to ``<folder>/<uuid>.nwb`` (default: the NWB folder field)."""
        uuids = self._require_selection()
        if uuids is None:
            return []
        folder = Path(folder or self.nwb_folder.value)
        paths = self._df.caiman.export_nwb(folder, items=uuids, **self.nwb_options)
        self._say(f"exported {len(paths)} item(s) to NWB in {folder}")
        return paths

    def wait(self, timeout: float = 60.0) -> None:
        """Block until none of this table's submissions is active (scripts and tests)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not any(s for s in self._df["status"] if s in ACTIVE) and not self._polling_active():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"items still active after {timeout} s")
            time.sleep(0.05)

    # -- live refresh ------------------------------------------------------------------------------
    def _polling_active(self) -> bool:
        return self._watch is not None

    def _ensure_polling(self) -> None:
        """Follow the batch (shared watcher) until nothing is active, with one more update at least."""
        with self._lock:
            if self._closed:
                return
            self._poll_kick = True  # a call under way may have read the records before our change
            if self._watch is None:
                self._watch = watch_batch(self._df).subscribe(self._batch_changed, interval=self.poll_interval)
            else:
                self._watch.refresh()

    def _batch_changed(self, change: BatchChange) -> None:
        """The watcher's call (its thread): update rows and bars; unsubscribe when all is finished."""
        if change.records is None:  # a transient read error must not end the live view
            self._say(f"refresh failed: {change.error}", error=True)
            return
        active = self._apply_records(change.records)
        with self._lock:
            if self._poll_kick and self._watch is not None:
                self._watch.refresh()  # one more call, with records read after our change
            elif not active and self._watch is not None:
                self._watch.cancel()
                self._watch = None
            self._poll_kick = False

    def poll_once(self) -> bool:
        """One live-refresh step: read the store, update rows and progress bars; True while active."""
        from ..runner import reap_stale

        store = store_of(self._df)
        reap_stale(store)
        return self._apply_records(store.items())

    def _apply_records(self, records: list[dict[str, Any]]) -> bool:
        """Rows, progress bars and durations from the store's records; True while any is active."""
        with self._lock:
            active = self._sync(records)
            by_uuid = {r["uuid"]: r for r in records}
            for sub in self._submissions:
                self._update_progress(sub, [by_uuid[u] for u in sub["uuids"] if u in by_uuid])
            for u in [u for u in self._started if by_uuid.get(u, {}).get("status") not in ACTIVE]:
                del self._started[u]
        return active

    @staticmethod
    def _update_progress(sub: dict[str, Any], recs: list[dict[str, Any]]) -> None:
        finished = [r for r in recs if r["status"] in FINISHED]
        done = sum(r["status"] == "done" for r in finished)
        sub["bar"].value = len(finished) + sum(float(r["progress"] or 0) for r in recs if r["status"] == "running")
        sub["label"].value = (f"{len(finished)}/{len(sub['uuids'])} finished, {done} done"
                              + (f", {len(finished) - done} not done" if len(finished) > done else ""))
        if len(finished) == len(recs):
            sub["bar"].bar_style = "success" if done == len(recs) else "warning"

    def close(self) -> None:
        """Stop following the batch and close the widgets."""
        self._closed = True
        with self._lock:
            watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel(wait=True)  # no update lands on closed widgets
        super().close()

    # -- remove ----------------------------------------------------------------------------------------
    def remove_selected(self, confirm: bool = False, remove_dependents: bool | None = None) -> list[str]:
        """Remove the selected items; without ``confirm`` only ask (the confirm button appears).

        Items others depend on are refused unless ``remove_dependents`` (the checkbox), which
        removes the dependents too. Nothing is removed when anything is refused
        (``df.caiman.remove_items`` decides).
        """
        uuids = self._require_selection()
        if uuids is None:
            return []
        if remove_dependents is not None:
            self.remove_dependents.value = bool(remove_dependents)
        if not confirm:
            self._show_confirm(self._plan_or_say(uuids))
            return []
        with self._lock:
            names = dict(zip(self._df["uuid"], self._df["item_name"], strict=True))
            try:
                plan = self._df.caiman.remove_items(uuids, remove_dependents=self.remove_dependents.value)
            except MesmerizeError as e:
                self._say(f"nothing removed: {e}", error=True)
                return []
            self._redraw()
        self._hide_confirm()
        self._say(f"removed {len(plan)} item(s): {', '.join(str(names[u]) for u in plan)}")
        return plan

    def _plan_or_say(self, uuids: list[str]) -> list[str] | None:
        """What removing ``uuids`` would remove, or None (and the reason said)."""
        try:
            plan = removal_plan(store_of(self._df), uuids, remove_dependents=self.remove_dependents.value)
        except MesmerizeError as e:
            self._say(f"nothing removed: {e}", error=True)
            return None
        self._say("")
        return plan

    def _show_confirm(self, plan: list[str] | None) -> None:
        self.confirm_box.layout.display = "flex"
        self._refresh_confirm(plan)

    def _refresh_confirm(self, plan: list[str] | None = _UNSET) -> None:
        if self.confirm_box.layout.display == "none":
            return
        if plan is _UNSET:
            plan = self._plan_or_say(list(self.selected_uuids))
        self.confirm_button.disabled = plan is None
        extra = len(plan or []) - len(self.selected_uuids)
        self.confirm_html.value = (
            "<b>cannot remove</b> (see below)" if plan is None else
            f"remove <b>{len(plan)}</b> item(s) and their outputs"
            + (f" ({extra} dependent(s) included)" if extra > 0 else "") + "?")

    def _hide_confirm(self) -> None:
        self.confirm_box.layout.display = "none"

    # -- duplicate ---------------------------------------------------------------------------------------
    def show_duplicate_editor(self) -> None:
        """Open the params editor prefilled with the selected item's params (defaults shown too)."""
        uuids = self._require_selection()
        if uuids is None:
            return
        row = self._df.caiman.uloc(uuids[0])
        self.duplicate_name.value = str(row["item_name"])
        self.duplicate_params.value = _pretty(_effective(row["algo"], row["params"]).get("main", {}))
        self.duplicate_box.layout.display = "flex"

    def _duplicate_from_editor(self) -> None:
        self.duplicate_selected(self.duplicate_params.value, self.duplicate_name.value or None)

    def duplicate_selected(self, params: dict | str | None = None, item_name: str | None = None) -> pd.Series | None:
        """Add a copy of the (first) selected item with edited params and the same input.

        ``params``: a dict or its text; ``{"main": {...}}`` replaces the params, any other dict
        updates params['main'] (keys left out keep their value). The same item name makes the
        copy a sibling, so its differing params are highlighted.
        """
        uuids = self._require_selection()
        if uuids is None:
            return None
        try:
            edit = _parse_params(params)
            with self._lock:
                new = self._df.caiman.duplicate_item(uuids[0], edit, item_name)
                self._redraw()
        except Exception as e:
            self._say(f"not added: {e}", error=True)
            return None
        self._say(f"added {new['item_name']!r} ({new['uuid'][:8]})")
        return new

    # -- open -----------------------------------------------------------------------------------------
    def on_open(self, callback: Callable[[pd.Series], None], remove: bool = False) -> None:
        """Call ``callback(row)`` when the user asks to open an item (the App shows its viewer)."""
        if remove:
            self._open_callbacks.remove(callback)
        else:
            self._open_callbacks.append(callback)

    def open_selected(self) -> pd.Series | None:
        """Emit an open request for the (first) selected item."""
        rows = self.selected_rows()
        if not rows:
            self._say("select an item to open", error=True)
            return None
        for cb in list(self._open_callbacks):
            cb(rows[0])
        return rows[0]


def _pretty(main: dict[str, Any]) -> str:
    return "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in main.items()) + "}"


def _parse_params(edit: dict | str | None) -> dict[str, Any]:
    """The editor's text (a Python literal, never eval'd) or a dict, as a dict."""
    if edit is None or (isinstance(edit, str) and not edit.strip()):
        return {}
    if isinstance(edit, str):
        try:
            edit = ast.literal_eval(edit)
        except (ValueError, SyntaxError) as e:
            raise ParamError(f"cannot read the params text ({e}); write a dict like {{'K': 4}}") from None
    if not isinstance(edit, dict):
        raise ParamError(f"params must be a dict, got {type(edit).__name__}")
    return edit
