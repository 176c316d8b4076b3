// The dashboard's editor and test panel. Plain JavaScript, no build step.
(function () {
  "use strict";

  var dataNode = document.getElementById("action-data");
  if (!dataNode) return;
  var data = JSON.parse(dataNode.textContent);
  var csrf = document.querySelector('meta[name="csrf-token"]').content;

  function $(id) { return document.getElementById(id); }

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

  // --- code editor: a textarea with a line-number gutter ------------------------------------
  var code = $("code");
  var gutter = $("gutter");
  var errorLine = null;

  function renderGutter() {
    var lines = code.value.split("\n").length;
    var html = [];
    for (var i = 1; i <= lines; i++) {
      html.push('<div class="' + (i === errorLine ? "error-line" : "") + '">' + i + "</div>");
    }
    gutter.innerHTML = html.join("");
    gutter.scrollTop = code.scrollTop;
  }

  if (code) {
    if (!data.action) {
      code.value = 'def execute_action(context):\n    return {"hello": context["args"].get("name")}\n';
    }
    code.addEventListener("input", function () { errorLine = null; renderGutter(); });
    code.addEventListener("scroll", function () { gutter.scrollTop = code.scrollTop; });
    code.addEventListener("keydown", function (ev) {
      if (ev.key === "Tab") {  // indent instead of leaving the editor
        ev.preventDefault();
        var start = code.selectionStart;
        code.setRangeText("    ", start, code.selectionEnd, "end");
        renderGutter();
      }
    });
    renderGutter();
  }

  // --- filling the form from the stored action ---------------------------------------------
  var action = data.action;
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

  function definition() {
    var body = { name: $("name").value.trim(), type: data.type };
    var description = $("description").value.trim();
    body.description = description || null;
    var params = jsonField("parameters", "Parameters");
    if (data.type === "python") {
      body.code = code.value;
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
    var request = data.id
      ? send("PATCH", "/ui/actions/" + encodeURIComponent(data.id), body)
      : send("POST", "/ui/actions", body);
    request.then(function (res) {
      if (res.status >= 400) {
        var err = res.body.error || { message: "save failed" };
        if (code && err.line) {
          errorLine = err.line;
          renderGutter();
        }
        showEditorError(err.message);
        return;
      }
      window.location = "/actions/" + encodeURIComponent(res.body.id) + "?saved=" + res.body.version;
    }).catch(function (e) { showEditorError("save failed: " + e.message); });
  });

  // --- test panel -------------------------------------------------------------------------
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

  runButton.addEventListener("click", function () {
    var args = {};
    var resultBox = $("test-result");
    var errorBox = $("result-error");
    try {
      document.querySelectorAll("#test-args [data-arg]").forEach(function (input) {
        if (input.value !== "") args[input.dataset.arg] = argValue(input);
      });
    } catch (e) {
      resultBox.hidden = false;
      errorBox.hidden = false;
      errorBox.textContent = e.message;
      return;
    }
    var body = { args: args, applyEffects: $("apply-effects").checked };
    var conversation = $("test-conversation").value.trim();
    if (conversation) body.conversationId = conversation;
    runButton.disabled = true;
    $("result-status").textContent = "running…";
    send("POST", "/ui/actions/" + encodeURIComponent(data.id) + "/test", body).then(function (res) {
      runButton.disabled = false;
      resultBox.hidden = false;
      var run = res.body;
      if (res.status >= 400) {
        $("result-status").textContent = "refused";
        errorBox.hidden = false;
        errorBox.textContent = (run.error && run.error.message) || "the test could not run";
        return;
      }
      $("result-status").textContent = run.status;
      $("result-duration").textContent = run.durationMs;
      $("result-link").href = "/runs/" + encodeURIComponent(run.runId);
      $("result-output").textContent = pretty(run.output);
      $("result-effects").textContent = pretty(run.effects);
      $("result-applied").textContent = run.effectsApplied ? "(applied)" : "(not applied)";
      $("result-logs").textContent = run.logs;
      errorBox.hidden = !run.error;
      errorBox.textContent = run.error ? run.error.type + ": " + run.error.message : "";
    }).catch(function (e) {
      runButton.disabled = false;
      errorBox.hidden = false;
      errorBox.textContent = "the test failed: " + e.message;
    });
  });
})();
