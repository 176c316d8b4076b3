// The dashboard's editor page (definition, policy, test panel) and the run page's code view.
// Plain JavaScript; the code editor is CodeMirror 6 from editor.js (built by `make editor`).
(function () {
  "use strict";

  function $(id) { return document.getElementById(id); }
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.content : "";
  var Editor = window.ActioncageEditor;

  function send(method, url, body) {
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    }).then(function (resp) {
      return resp.json().then(function (json) { return { status: resp.status, body: json }; });
    });
  }

  function pretty(value) {
    return value === undefined ? "" : JSON.stringify(value, null, 2);
  }

  function show(id, visible) { $(id).hidden = !visible; }

  // --- the run page: the version's code, read-only, with the failing line marked ------------
  var runData = $("run-data");
  if (runData) {
    var run = JSON.parse(runData.textContent);
    if (run.code !== null && $("run-code") && Editor) {
      var viewer = Editor.create($("run-code"), { doc: run.code, readOnly: true, label: "Code of this version" });
      if (run.failingLine) viewer.markLine(run.failingLine, true);
      window.actioncageViewer = viewer;
    }
    return;
  }

  var dataNode = $("action-data");
  if (!dataNode) return;
  var data = JSON.parse(dataNode.textContent);
  var action = data.action;

  // --- code editor ---------------------------------------------------------------------------
  var editor = null;
  if ($("code-editor") && Editor) {
    var initial = $("code-source").value;
    if (!action) {
      initial = 'def execute_action(context):\n    return {"hello": context["args"].get("name")}\n';
    }
    editor = Editor.create($("code-editor"), { doc: initial, label: "Code" });
    window.actioncageEditor = editor;  // tests and keyboard users reach it the same way
  }

  // --- filling the form from the stored action ---------------------------------------------
  if (action) {
    if (action.parameters && data.type === "python") $("parameters").value = pretty(action.parameters);
    if (action.endpoint) {
      var ep = action.endpoint;
      $("base-url").value = data.baseUrl;
      $("path").value = data.path;
      $("method").value = ep.method;
      $("headers").value = Object.keys(ep.headers).length ? pretty(ep.headers) : "";
      $("query").value = Object.keys(ep.query).length ? pretty(ep.query) : "";
      $("payload").value = ep.payload === null ? "" : pretty(ep.payload);
      $("timeout").value = ep.timeoutMs || "";
      $("parameters").value = pretty(action.parameters);
    }
    var policy = action.policy || {};
    if ($("policy-timeout")) $("policy-timeout").value = policy.timeoutMs || "";
    if ($("policy-memory")) $("policy-memory").value = policy.memoryMb || "";
    if ($("policy-cpus")) $("policy-cpus").value = policy.cpus || "";
    $("policy-egress").value = (policy.egress || []).join("\n");
  }

  function showEditorError(message) {
    var box = $("editor-error");
    box.textContent = message;
    box.hidden = !message;
  }

  function jsonField(id, label) {
    var text = $(id).value.trim();
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new Error(label + " is not valid JSON: " + e.message);
    }
  }

  function numberField(id, parse) {
    var input = $(id);
    if (!input) return undefined;
    var text = input.value.trim();
    return text ? parse(text) : undefined;
  }

  function policyBody() {
    var out = {};
    var timeout = numberField("policy-timeout", function (t) { return parseInt(t, 10); });
    var memory = numberField("policy-memory", function (t) { return parseInt(t, 10); });
    var cpus = numberField("policy-cpus", parseFloat);
    if (timeout !== undefined) out.timeoutMs = timeout;
    if (memory !== undefined) out.memoryMb = memory;
    if (cpus !== undefined) out.cpus = cpus;
    out.egress = $("policy-egress").value.split(/[\s,]+/).filter(function (h) { return h; });
    return out;
  }

  function definition() {
    var body = { name: $("name").value.trim(), type: data.type };
    var description = $("description").value.trim();
    body.description = description || null;
    var params = jsonField("parameters", "Parameters");
    body.policy = policyBody();
    if (data.type === "python") {
      body.code = editor.getValue();
      body.parameters = params === undefined ? false : params;
    } else {
      var endpoint = {
        url: $("base-url").value.trim().replace(/\/+$/, "") + $("path").value.trim(),
        method: $("method").value,
        headers: jsonField("headers", "Headers") || {},
        query: jsonField("query", "Query parameters") || {},
      };
      var payload = jsonField("payload", "Request body");
      if (payload !== undefined) endpoint.payload = payload;
      var timeout = $("timeout").value.trim();
      if (timeout) endpoint.timeoutMs = parseInt(timeout, 10);
      body.endpoint = endpoint;
      // A stored schema still listing removed variables would be refused: send only edits.
      if (params !== undefined && JSON.stringify(params) !== JSON.stringify(action && action.parameters)) {
        body.parameters = params;
      }
    }
    return body;
  }

  $("save").addEventListener("click", function () {
    var body;
    try {
      body = definition();
    } catch (e) {
      showEditorError(e.message);
      return;
    }
    showEditorError("");
    var saving = $("save");
    saving.disabled = true;
    var request = data.id
      ? send("PATCH", "/ui/actions/" + encodeURIComponent(data.id), body)
      : send("POST", "/ui/actions", body);
    request.then(function (res) {
      saving.disabled = false;
      if (res.status >= 400) {
        var err = res.body.error || { message: "save failed" };
        if (editor && err.line) editor.markLine(err.line, false);
        showEditorError(err.message);
        return;
      }
      window.location = "/actions/" + encodeURIComponent(res.body.id) + "?saved=" + res.body.version;
    }).catch(function (e) {
      saving.disabled = false;
      showEditorError("save failed: " + e.message);
    });
  });

  // --- test panel: only the current result is ever shown -------------------------------------
  var runButton = $("test-run");
  if (!runButton) return;

  function argValue(input) {
    var text = input.value;
    var type = input.dataset.type;
    if (type === "string") return text;
    try {
      return JSON.parse(text);
    } catch (e) {
      if (type === "any") return text;
      throw new Error(input.dataset.arg + " must be JSON of type " + type);
    }
  }

  function resetResult(statusText, statusClass) {
    show("test-result", true);
    var badge = $("result-status");
    badge.textContent = statusText;
    badge.className = "badge " + (statusClass || "");
    $("result-meta").textContent = "";
    show("result-link", false);
    show("result-error", false);
    $("result-error").textContent = "";
    show("conversation-offer", false);
    show("result-traceback-box", false);
    show("result-body", false);
    ["result-output", "result-effects", "result-logs", "result-traceback", "result-applied"].forEach(
      function (id) { $(id).textContent = ""; }
    );
  }

  function fail(message) {
    show("result-error", true);
    $("result-error").textContent = message;
  }

  function testBody() {
    var args = {};
    document.querySelectorAll("#test-args [data-arg]").forEach(function (input) {
      if (input.value !== "") args[input.dataset.arg] = argValue(input);
    });
    var body = { args: args, applyEffects: $("apply-effects").checked };
    var conversation = $("test-conversation").value.trim();
    if (conversation) body.conversationId = conversation;
    return body;
  }

  function runTest() {
    var body;
    try {
      body = testBody();
    } catch (e) {
      resetResult("not run", "error");
      fail(e.message);
      return;
    }
    resetResult("running…", "running");
    runButton.disabled = true;
    send("POST", "/ui/actions/" + encodeURIComponent(data.id) + "/test", body).then(function (res) {
      runButton.disabled = false;
      var out = res.body;
      if (res.status >= 400 && !(out && out.runId)) {
        var err = (out && out.error) || {};
        $("result-status").textContent = "refused";
        $("result-status").className = "badge error";
        fail(err.message || "the test could not run");
        if (res.status === 404 && body.conversationId && /conversation/.test(err.message || "")) {
          $("conversation-offer-text").textContent =
            "There is no conversation " + body.conversationId + " yet.";
          show("conversation-offer", true);
        }
        return;
      }
      var status = out.error ? out.error.type : out.status;
      $("result-status").textContent = status;
      $("result-status").className = "badge " + out.status;
      $("result-meta").textContent = "v" + out.actionVersion + " · " + out.durationMs + " ms";
      $("result-link").href = "/runs/" + encodeURIComponent(out.runId);
      show("result-link", true);
      if (out.error) {
        fail(out.error.type + ": " + out.error.message);
        if (out.error.traceback) {
          $("result-traceback").textContent = out.error.traceback;
          show("result-traceback-box", true);
          var lines = out.error.traceback.match(/File "action\.py", line (\d+)/g);
          if (editor && lines) {
            editor.markLine(parseInt(lines[lines.length - 1].match(/(\d+)$/)[1], 10), false);
          }
        }
      }
      show("result-body", true);
      $("result-output").textContent = pretty(out.output);
      $("result-effects").textContent = out.effects.length ? pretty(out.effects) : "none";
      $("result-applied").textContent = out.effectsApplied ? "(applied)" : "(not applied)";
      $("result-logs").textContent = out.logs || "(no logs)";
    }).catch(function (e) {
      runButton.disabled = false;
      resetResult("failed", "error");
      fail("the test failed: " + e.message);
    });
  }

  runButton.addEventListener("click", runTest);

  $("create-conversation").addEventListener("click", function () {
    var id = $("test-conversation").value.trim();
    send("POST", "/ui/conversations", { id: id }).then(function (res) {
      if (res.status >= 400) {
        fail((res.body.error && res.body.error.message) || "could not create the conversation");
        return;
      }
      runTest();
    });
  });
})();
