// Portero console: refresh the element #live every 2 seconds. Everything works without this script;
// it only saves pressing "Refresh". It waits while a field in #live has the focus, and what was typed
// into a field is put back after a refresh. The server answers X-Console-Partial with #live's content alone
// and hands back the page's form token (X-Console-Form) so forms keep working after a refresh.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.fetch) return;
  var busy = false;
  function typing() {
    var el = document.activeElement;
    return el && live.contains(el) && (el.tagName === "INPUT" || el.tagName === "TEXTAREA");
  }
  // The number of calls waiting: in the tab's title (seen from another tab) and the menu's badge.
  function showPending(count) {
    if (count === null) return;
    var n = parseInt(count, 10) || 0;
    document.title = document.title.replace(/^\(\d+\) /, "");
    if (n > 0) document.title = "(" + n + ") " + document.title;
    var badge = document.getElementById("pending-badge");
    if (badge) { badge.textContent = String(n); badge.hidden = n === 0; }
  }
  function refresh() {
    if (busy || document.hidden || typing()) return;
    busy = true;
    fetch(window.location.href, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-Console-Partial": "1", "X-Console-Form": live.getAttribute("data-form") || "" }
    }).then(function (response) {
      if (response.status === 401) { window.location.reload(); return null; }
      if (!response.ok) return null;
      var token = response.headers.get("X-Console-Form");
      showPending(response.headers.get("X-Console-Pending"));
      return response.text().then(function (html) {
        if (typing()) return;
        var kept = {};  // what was typed (a reason) survives the refresh, by the field's id
        live.querySelectorAll("input[id], textarea[id]").forEach(function (el) {
          if (el.type !== "hidden" && el.value) kept[el.id] = el.value;
        });
        live.innerHTML = html;
        Object.keys(kept).forEach(function (id) {
          var el = document.getElementById(id);
          if (el && live.contains(el)) el.value = kept[id];
        });
        if (token) live.setAttribute("data-form", token);
      });
    }).catch(function () { /* the gateway restarts: try again next time */ })
      .then(function () { busy = false; });
  }
  window.setInterval(refresh, 2000);
})();
