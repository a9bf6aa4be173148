"""``ParamGrid``: a form built from an algorithm's param schema that adds a grid of items.

Each field takes one value or several (the mini-syntax of :mod:`mesmerize_widgets.accessors.grid`: ``24``, ``[4, 5, 6]``,
``3..9 step 2``, ``3:9:2``, ``(4, 4) | (6, 6)``) and is checked as you type, the error shown
beside it. The form counts the combinations, previews the items it would add, and adds one item
per combination for each selected input, all or nothing.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import pandas as pd
import traitlets

from ..accessors import grid as G
from ..algorithms import algorithms, get_algorithm
from ..errors import MesmerizeError

_ERR = "color:#b00020"
_HINT = "color:#666"
_MAX_PREVIEW = 50


def _describe(p: Any) -> str:
    """The one-line tooltip of a field: doc, kind, default and the grid syntax reminder."""
    kind = p.kind if p.kind not in ("tuple", "list") else f"{p.kind} of {p.length or ''} {p.item}".replace("  ", " ")
    extra = f"; one of {list(p.choices)}" if p.choices else ""
    none = " or None" if p.nullable else ""
    return f"{p.doc} ({kind}{none}{extra}; default {p.default!r}). Several values: [a, b], a | b, 3..9 step 2"


class ParamGrid(widgets.VBox):
    """Form for one algorithm's params; ``add_to_batch()`` adds the grid for the chosen inputs."""

    n_combinations = traitlets.Int(1, help="combinations of the current values (0 while invalid)")

    def __init__(
        self,
        df: pd.DataFrame,
        algo: str = "summary",
        inputs: Sequence[Any] | None = None,
        *,
        item_name: str | None = None,
        template: str | None = None,
    ):
        self._df = df
        self._inputs: list[Any] = []
        self._added_callbacks: list[Callable[[list[pd.Series]], None]] = []
        self.algo_dropdown = widgets.Dropdown(
            options=sorted(algorithms()), value=get_algorithm(algo).name, description="algo",
            tooltip="algorithm whose params this form edits",
        )
        self.inputs_select = widgets.SelectMultiple(
            options=[], description="inputs", rows=4, layout=widgets.Layout(width="95%"),
            tooltip="movies or batch items to add the grid for (one set of items per input)",
        )
        self.name_text = widgets.Text(
            value=item_name or "", description="item name", placeholder="the input's name",
            tooltip="base item name; the varying params are appended, e.g. 'mouse1 K=4'",
        )
        self.template_text = widgets.Text(
            value=template or "", description="template", placeholder="{name} K={K}",
            tooltip="optional name template: {name} is the base name, {param} a param's value",
        )
        self.fields: dict[str, widgets.Text] = {}
        self.field_status: dict[str, widgets.HTML] = {}
        self.fields_box = widgets.VBox()
        self.count_html = widgets.HTML()
        self.preview_html = widgets.HTML()
        self.add_button = widgets.Button(description="add to batch", button_style="success", icon="plus",
                                         tooltip="add one item per combination for each selected input")
        self.suggest_button = widgets.Button(
            description="suggest", icon="magic",
            tooltip="measure the first selected input's movie and fill in gSig, K, decay_time, ... "
                    "(each value with its reason)")
        self.suggest_html = widgets.HTML()
        self.warnings_html = widgets.HTML()
        self.message = widgets.HTML()
        self.suggestion: Any = None
        self.add_button.on_click(lambda _: self.add_to_batch())
        self.suggest_button.on_click(lambda _: self.suggest())
        self.algo_dropdown.observe(lambda _: self._build_fields(), names="value")
        for w in (self.inputs_select, self.name_text, self.template_text):
            w.observe(lambda _: self._update(), names="value")
        super().__init__(children=[
            self.algo_dropdown, self.inputs_select, widgets.HBox([self.name_text, self.template_text]),
            self.fields_box, self.suggest_html, self.count_html, self.warnings_html, self.preview_html,
            widgets.HBox([self.suggest_button, self.add_button]), self.message,
        ])
        self._build_fields()
        self.set_inputs(inputs or [])

    # -- public API ------------------------------------------------------------------------------
    @property
    def algo(self) -> str:
        return self.algo_dropdown.value

    def set_inputs(self, inputs: Sequence[Any], selected: Sequence[int] | None = None) -> None:
        """Offer these inputs (movie paths, batch rows or uuids); all are selected by default."""
        if isinstance(inputs, pd.DataFrame):
            inputs = [r for _, r in inputs.iterrows()]
        self._inputs = list(inputs)
        self.inputs_select.options = [(self._input_text(s), i) for i, s in enumerate(self._inputs)]
        self.inputs_select.value = tuple(range(len(self._inputs)) if selected is None else selected)
        self._update()

    def set_text(self, name: str, text: str) -> None:
        """Type ``text`` into the field of param ``name`` (as a user would)."""
        self.fields[name].value = text

    @property
    def errors(self) -> dict[str, str]:
        """Field name -> message, for every field whose text is invalid now."""
        out = {}
        for name, field in self.fields.items():
            try:
                G.parse_values(field.value, get_algorithm(self.algo).schema[name])
            except MesmerizeError as e:
                out[name] = str(e)
        return out

    def values(self) -> dict[str, list[Any]]:
        """Every param's parsed values; raises ParamError naming the first invalid field."""
        schema = get_algorithm(self.algo).schema
        return {name: G.parse_values(f.value, schema[name]) for name, f in self.fields.items()}

    def selected_inputs(self) -> list[Any]:
        return [self._inputs[i] for i in self.inputs_select.value]

    def plan(self) -> list[dict[str, Any]]:
        """The items ``add_to_batch`` would add (input, item_name, params, combo); raises if invalid."""
        return G.plan_grid(self._df, self.algo, self.selected_inputs(), self.values(),
                           item_name=self.name_text.value.strip() or None,
                           template=self.template_text.value.strip() or None)

    def preview(self) -> pd.DataFrame:
        """One row per item to add: input, item_name and the params that vary."""
        values = self.values()
        keys = G.varying(values)
        rows = [{"input": self._input_text(e["input"]), "item_name": e["item_name"],
                 **{k: e["combo"][k] for k in keys}} for e in self.plan()]
        return pd.DataFrame(rows, columns=["input", "item_name", *keys])

    def suggest(self) -> Any:
        """Fill the fields from the first selected input's movie; the reasons go under the form.

        Fields with one value are passed as the params to keep; estimated values replace them.
        Returns the Suggestion (None, with the problem in ``message``, when it failed).
        """
        inputs = self.selected_inputs()
        if not inputs:
            self._say("choose an input to measure", error=True)
            return None
        schema = get_algorithm(self.algo).schema
        base = {}
        for name, field in self.fields.items():
            try:
                vals = G.parse_values(field.value, schema[name])
            except MesmerizeError:
                continue
            if len(vals) == 1 and field.value.strip() != G.format_value(schema[name].default):
                base[name] = vals[0]
        try:
            sug = G.suggest_for_input(self._df, self.algo, inputs[0], {"main": base})
        except Exception as e:  # shown to the user, never a traceback
            self._say(f"no suggestion: {e}", error=True)
            return None
        self.suggestion = sug
        for name in sug.reasons:
            if name in self.fields:
                self.fields[name].value = G.format_value(sug.main[name])
        self.suggest_html.value = sug._repr_html_()
        self._say(f"filled {len(sug.reasons)} field(s) from {html.escape(self._input_text(inputs[0]))}")
        self._update()
        return sug

    def add_to_batch(self) -> list[pd.Series]:
        """Add the grid; on any problem show it in ``message`` and add nothing."""
        try:
            rows = G.add_plan(self._df, self.algo, self.plan())
        except Exception as e:  # shown to the user, never a traceback
            self._say(f"nothing added: {e}", error=True)
            return []
        self._say(f"added {len(rows)} item(s): " + ", ".join(html.escape(r["item_name"]) for r in rows[:5])
                  + (" ..." if len(rows) > 5 else ""))
        for cb in list(self._added_callbacks):
            cb(rows)
        return rows

    def on_added(self, callback: Callable[[list[pd.Series]], None], remove: bool = False) -> None:
        """Call ``callback(rows)`` after items were added (e.g. to refresh a BatchTable)."""
        if remove:
            self._added_callbacks.remove(callback)
        else:
            self._added_callbacks.append(callback)

    # -- internals -------------------------------------------------------------------------------
    def _input_text(self, source: Any) -> str:
        uuid = G.input_uuid(self._df, source)
        if uuid is not None:
            row = self._df.caiman.uloc(uuid)
            return f"{row['item_name']} ({row['algo']}, {uuid[:8]})"
        return str(source)

    def _say(self, text: str, error: bool = False) -> None:
        self.message.value = f"<span style='{_ERR if error else _HINT}'>{html.escape(text) if error else text}</span>"

    def _build_fields(self) -> None:
        schema = get_algorithm(self.algo).schema
        self.fields, self.field_status, rows = {}, {}, []
        for p in schema.params:
            text = widgets.Text(
                value=G.format_value(p.default), description=p.name, tooltip=_describe(p),
                continuous_update=True, style={"description_width": "140px"},
                layout=widgets.Layout(width="420px"),
            )
            status = widgets.HTML(layout=widgets.Layout(width="auto"))
            text.observe(lambda _, n=p.name: self._check_field(n), names="value")
            self.fields[p.name], self.field_status[p.name] = text, status
            rows.append(widgets.HBox([text, status]))
        self.fields_box.children = rows
        for name in self.fields:
            self._check_field(name, update=False)
        self._update()

    def _check_field(self, name: str, update: bool = True) -> None:
        param = get_algorithm(self.algo).schema[name]
        try:
            n = len(G.parse_values(self.fields[name].value, param))
            self.field_status[name].value = f"<span style='{_HINT}'>{n} values</span>" if n > 1 else ""
        except MesmerizeError as e:
            self.field_status[name].value = f"<span style='{_ERR}'>{html.escape(str(e))}</span>"
        if update:
            self._update()

    def _update(self) -> None:
        """Recount, re-preview and enable the button only when everything is valid."""
        if not self.fields:
            return
        errors = self.errors
        if errors:
            self.n_combinations = 0
            self.count_html.value = f"<span style='{_ERR}'>fix {len(errors)} field(s): {', '.join(errors)}</span>"
            self.preview_html.value = ""
            self.add_button.disabled = True
            return
        values = self.values()
        n = 1
        for v in values.values():
            n *= len(v)
        self.n_combinations = n
        n_in = len(self.inputs_select.value)
        self.count_html.value = f"<b>{n}</b> combination(s) x <b>{n_in}</b> input(s) = <b>{n * n_in}</b> item(s)"
        try:
            table = self.preview()
        except Exception as e:
            self.preview_html.value = f"<span style='{_ERR}'>{html.escape(str(e))}</span>"
            self.add_button.disabled = True
            return
        self.add_button.disabled = n_in == 0
        try:  # movies already measured only: cheap on every keystroke
            warns = G.plan_warnings(self._df, self.algo, self.plan(), measure=False)
        except Exception:
            warns = []
        self.warnings_html.value = "".join(f"<div style='{_ERR}'>&#9888; {html.escape(w)}</div>" for w in warns)
        shown = table.head(_MAX_PREVIEW)
        more = f"<div style='{_HINT}'>... and {len(table) - len(shown)} more</div>" if len(table) > len(shown) else ""
        self.preview_html.value = shown.to_html(index=False, escape=True, border=0) + more if len(shown) else ""
