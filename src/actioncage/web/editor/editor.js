// The dashboard's code editor: CodeMirror 6 with Python highlighting and line numbers.
// Bundled by `make editor` (esbuild) into ../static/editor.js; pages load only that file.
// It exposes window.ActioncageEditor.create(parent, options) -> an editor handle.
import { EditorView, basicSetup } from "codemirror";
import { python } from "@codemirror/lang-python";
import { EditorState, StateEffect, StateField, RangeSet } from "@codemirror/state";
import { Decoration, GutterMarker, gutterLineClass, keymap } from "@codemirror/view";
import { indentWithTab } from "@codemirror/commands";

// One highlighted line at most: a save error or a traceback's failing line.
const setMark = StateEffect.define();

class MarkedGutter extends GutterMarker {
  get elementClass() { return "cm-marked-gutter"; }
}
const gutterMark = new MarkedGutter();

const markField = StateField.define({
  create() { return null; },
  update(value, tr) {
    for (const effect of tr.effects) if (effect.is(setMark)) value = effect.value;
    // Editing the text clears a save error's mark: it may no longer be right.
    if (tr.docChanged && value && !value.sticky) value = null;
    return value;
  },
  provide: (field) => [
    EditorView.decorations.from(field, (mark) => {
      if (!mark) return Decoration.none;
      return Decoration.set([
        Decoration.line({ class: "cm-marked-line", attributes: { "data-marked-line": String(mark.line) } }).range(mark.from),
      ]);
    }),
    gutterLineClass.from(field, (mark) => (mark ? RangeSet.of([gutterMark.range(mark.from)]) : RangeSet.empty)),
  ],
});

// The page's Content-Security-Policy admits style elements carrying this nonce only.
function styleNonce() {
  const meta = document.querySelector('meta[name="style-nonce"]');
  return meta ? meta.content : "";
}

function create(parent, options) {
  const opts = options || {};
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: opts.doc || "",
      extensions: [
        EditorView.cspNonce.of(styleNonce()),
        basicSetup,
        python(),
        keymap.of([indentWithTab]),
        markField,
        EditorState.readOnly.of(!!opts.readOnly),
        EditorView.editable.of(!opts.readOnly),
        EditorView.contentAttributes.of({ "aria-label": opts.label || "Code" }),
        EditorView.updateListener.of((update) => {
          if (update.docChanged && opts.onChange) opts.onChange();
        }),
      ],
    }),
  });

  return {
    view,
    getValue() { return view.state.doc.toString(); },
    setValue(text) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
    },
    // Highlight line n (1-based) and scroll to it; sticky marks survive edits.
    markLine(n, sticky) {
      const doc = view.state.doc;
      if (!n || n < 1 || n > doc.lines) {
        view.dispatch({ effects: setMark.of(null) });
        return;
      }
      const line = doc.line(n);
      view.dispatch({
        effects: [
          setMark.of({ line: n, from: line.from, sticky: !!sticky }),
          EditorView.scrollIntoView(line.from, { y: "center" }),
        ],
      });
    },
    clearMark() { view.dispatch({ effects: setMark.of(null) }); },
  };
}

window.ActioncageEditor = { create };
